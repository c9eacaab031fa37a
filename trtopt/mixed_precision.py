"""Automatic mixed precision: keep few, contiguous INT8 layers float until an accuracy budget holds.

The search, measured rather than estimated at every step, and bounded (about 2 x blocks +
prune_evaluations variants, each one Q/DQ pass and one run over the held-out batches):

1. Evaluate the full INT8 variant; if it meets the budget, nothing stays float.
2. **Probe blocks.** Split the quantized layers, in graph order, into ``blocks`` contiguous blocks
   and evaluate each block *left alone in float* (everything else INT8). Its *gain* is how much
   output noise that removes (noise-to-signal power summed over outputs, a continuous measure even
   when the budget's metric is coarse, such as identical decoded lines out of 30). Its *cost* is
   what float costs in speed: with ONNX Runtime as the target, the measured drop in speedup vs FP32
   (:mod:`trtopt.latency`, FP32 timed in the same rounds); elsewhere the block's share of the
   quantized MACs, an estimate (the manifest says which). One-layer noise estimates ranked badly on
   real models (errors compound: PP-OCRv4's recognizer needed 118 of 127 layers float by that
   ranking); measured blocks see what a layer's noise does downstream.
3. **Prefix over the block ranking.** Blocks are ranked by gain per cost (a block whose float
   version is not slower, i.e. whose INT8 version is not faster anyway, comes first); keep the top
   1, 2, 4, ... blocks float until the budget holds, then bisect for the smallest prefix that holds.
4. **Prune** the float set: split each contiguous float run into halves, quarters, ...; try
   returning each piece to INT8, most MACs first (the most speed won back), and keep the return
   when the budget still holds. Pieces with negligible MACs (under 0.1% of the quantized MACs) are
   not tried: INT8 would not make them faster. Pieces are contiguous, so float regions stay whole
   and few Q/DQ boundaries appear (each one costs a quantize or dequantize on ONNX Runtime's CPU).
   Stops after :attr:`SearchSettings.prune_evaluations` variants.
5. **Close islands**: an INT8 layer whose graph-order neighbours are both float would pay a quantize
   and a dequantize for one layer, so it joins the float set if the budget still holds.
6. With every layer float the model is FP32 again, so an accuracy budget can always be met; a budget
   with ``speedup`` may not be: then the search fails with the best variant reached (the smallest
   :meth:`AccuracyBudget.shortfall`), and the build writes nothing.

Every variant reuses the one calibration. The result records each kept layer with its block, the
block's measured gain and cost, its MACs and why it stayed float; the search's cost (variants,
seconds) and every evaluated variant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trtopt.budget import AccuracyBudget
from trtopt.errors import TrtoptError
from trtopt.int8_eval import Evaluation, Evaluator, Layer, macs_per_sample
from trtopt.sensitivity import noise_to_signal

NEGLIGIBLE_MACS_SHARE = 1e-3  # a piece below this share of the quantized MACs gains nothing from INT8
FREE_SPEED = 0.01  # a block whose float version loses less speedup than this (measured) costs nothing


@dataclass(frozen=True)
class SearchSettings:
    """How much the search may spend: blocks probed, pruning variants."""

    blocks: int = 12
    prune_evaluations: int = 16
    close_islands: bool = True


@dataclass(frozen=True)
class Block:
    """A contiguous graph-order run of layers, probed alone in float."""

    index: int
    layers: tuple[str, ...]
    gain: float  # output noise-to-signal removed by keeping this block float (all else INT8)
    cost: float  # measured speedup lost vs the full INT8 variant, or (estimated) the block's share of MACs

    @property
    def priority(self) -> tuple[int, float]:
        """Useful blocks first (gain > 0); among them the most gain per cost; free blocks by gain alone."""
        if self.gain <= 0:
            return (1, -self.gain)
        return (0, -self.gain / self.cost if self.cost > 0 else -math.inf)


@dataclass
class SearchResult:
    """What stayed float and why, the chosen variant, and what the search cost."""

    kept_float: list[dict[str, Any]]  # [{"node", "op_type", "block", "macs", "reason"}]
    chosen: Evaluation
    evaluations: int
    seconds: float
    tried: list[dict[str, Any]]  # every evaluated variant: {"phase", "float_layers", "shortfall", "speedup", ...}
    blocks: list[dict[str, Any]]
    latency_source: str

    @property
    def float_nodes(self) -> list[str]:
        return [entry["node"] for entry in self.kept_float]

    @property
    def speedup(self) -> float | None:
        return self.chosen.speedup

    def to_json(self) -> dict[str, Any]:
        return {
            "kept_float": self.kept_float,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "speedup": None if self.speedup is None else round(self.speedup, 4),
            "latency_source": self.latency_source,
            "blocks": self.blocks,
            "tried": self.tried,
        }


class BudgetUnreachable(TrtoptError):
    """No assignment of layers to float met the budget; carries the best one reached."""

    def __init__(self, message: str, best: SearchResult) -> None:
        super().__init__(message)
        self.best = best


class _Search:
    """The state of one search: every variant measured, keyed by its float set."""

    def __init__(self, evaluator: Evaluator, budget: AccuracyBudget) -> None:
        self.evaluator = evaluator
        self.budget = budget
        self.measured: dict[frozenset[str], tuple[Evaluation, list[str], float]] = {}
        self.tried: list[dict[str, Any]] = []
        self.start = (evaluator.evaluations, evaluator.seconds)

    def evaluation(self, float_layers: frozenset[str], phase: str) -> Evaluation:
        if float_layers not in self.measured:
            evaluation = self.evaluator.evaluate(float_layers)
            problems = self.budget.violations(evaluation.report, evaluation.speedup)
            shortfall = self.budget.shortfall(evaluation.report, evaluation.speedup)
            self.measured[float_layers] = (evaluation, problems, shortfall)
            self.tried.append(
                {
                    "phase": phase,
                    "float_layers": len(float_layers),
                    "shortfall": round(shortfall, 6),
                    "noise_to_signal": noise_to_signal(evaluation.report),
                    "speedup": None if evaluation.speedup is None else round(evaluation.speedup, 4),
                    "problems": problems,
                }
            )
        return self.measured[float_layers][0]

    def holds(self, float_layers: frozenset[str], phase: str) -> bool:
        self.evaluation(float_layers, phase)
        return not self.measured[float_layers][1]

    def result(self, kept: list[dict[str, Any]], blocks: list[Block], latency_source: str) -> SearchResult:
        evaluation = self.measured[frozenset(entry["node"] for entry in kept)][0]
        return SearchResult(
            kept,
            evaluation,
            self.evaluator.evaluations - self.start[0],
            self.evaluator.seconds - self.start[1],
            self.tried,
            [{"index": b.index, "layers": len(b.layers), "first": b.layers[0], "last": b.layers[-1],
              "gain": b.gain, "cost": b.cost} for b in blocks],
            latency_source,
        )


def split_blocks(order: Sequence[str], count: int) -> list[tuple[str, ...]]:
    """``order`` in ``count`` contiguous runs of nearly equal length (fewer when there are fewer layers)."""
    count = max(1, min(count, len(order)))
    bounds = [round(i * len(order) / count) for i in range(count + 1)]
    return [tuple(order[bounds[i] : bounds[i + 1]]) for i in range(count)]


def _probe(search: _Search, runs: list[tuple[str, ...]], macs: dict[str, float], int8: Evaluation) -> list[Block]:
    """Each run alone in float: measured gain, and measured (or MACs-estimated) cost."""
    baseline = noise_to_signal(int8.report)
    total = sum(macs.values()) or 1.0
    blocks = []
    for index, layers in enumerate(runs):
        evaluation = search.evaluation(frozenset(layers), "probe")
        gain = baseline - noise_to_signal(evaluation.report)
        if int8.speedup is not None and evaluation.speedup is not None:
            lost = int8.speedup - evaluation.speedup
            cost = 0.0 if lost < FREE_SPEED else lost
        else:
            cost = sum(macs[n] for n in layers) / total
        blocks.append(Block(index, layers, gain if math.isfinite(gain) else math.inf, cost))
    return blocks


def _prefix(search: _Search, ranked: Sequence[Block]) -> int | None:
    """Smallest k whose top-k blocks float hold (doubling, then bisection), or None when even all float misses."""

    def holds(k: int) -> bool:
        return search.holds(frozenset(n for block in ranked[:k] for n in block.layers), "prefix")

    low, high = 0, None  # low: largest k known to miss; high: smallest k known to hold
    k = 1
    while k < len(ranked):
        if holds(k):
            high = k
            break
        low, k = k, 2 * k
    if high is None:
        high = len(ranked) if ranked and holds(len(ranked)) else None
    if high is None:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle
    return high


def contiguous_runs(kept: set[str], order: Sequence[str]) -> list[list[str]]:
    """The float set as maximal runs of graph-order neighbours."""
    runs: list[list[str]] = []
    previous = False
    for name in order:
        if name in kept:
            if not previous:
                runs.append([])
            runs[-1].append(name)
        previous = name in kept
    return runs


def _prune(search: _Search, kept: set[str], order: list[str], macs: dict[str, float], limit: int) -> set[str]:
    """Return contiguous pieces of the float runs to INT8 while the budget holds, most MACs first."""
    negligible = NEGLIGIBLE_MACS_SHARE * sum(macs.values())
    spent, parts = 0, 2
    longest = max((len(run) for run in contiguous_runs(kept, order)), default=0)
    while spent < limit and kept and parts <= 2 * longest:
        pieces = [piece for run in contiguous_runs(kept, order) for piece in _pieces(run, parts)]
        pieces = [p for p in pieces if sum(macs[n] for n in p) > negligible]
        for piece in sorted(pieces, key=lambda p: -sum(macs[n] for n in p)):
            if spent >= limit:
                break
            candidate = kept - set(piece)
            if not set(piece) <= kept:
                continue
            if frozenset(candidate) not in search.measured:
                spent += 1
            if search.holds(frozenset(candidate), "prune"):
                kept = candidate
        parts *= 2
    return kept


def _pieces(run: list[str], parts: int) -> list[list[str]]:
    """``run`` cut into ``parts`` contiguous pieces (single layers when it is shorter)."""
    if len(run) <= parts:
        return [[name] for name in run]
    return [list(piece) for piece in split_blocks(run, parts)]


def _islands(kept: set[str], order: list[str]) -> set[str]:
    """INT8 layers whose graph-order neighbours are both float."""
    return {order[i] for i in range(1, len(order) - 1) if order[i] not in kept and {order[i - 1], order[i + 1]} <= kept}


def search(
    evaluator: Evaluator, layers: Sequence[Layer], budget: AccuracyBudget, settings: SearchSettings | None = None
) -> SearchResult:
    """A small, contiguous float set that makes ``budget`` hold (see the module docstring)."""
    settings = settings or SearchSettings()
    latency_source = (
        "measured: ONNX Runtime on the CPU (the target), fastest of interleaved rounds vs FP32"
        if evaluator.latency is not None
        else "estimated: multiply-accumulates per layer (the target backend cannot run candidates here)"
    )
    state = _Search(evaluator, budget)
    int8 = state.evaluation(frozenset(), "int8")
    if state.holds(frozenset(), "int8"):
        return state.result([], [], latency_source)
    order = [layer.name for layer in layers]
    by_name = {layer.name: layer for layer in layers}
    macs = macs_per_sample(evaluator, layers) if layers else {}
    blocks = _probe(state, split_blocks(order, settings.blocks), macs, int8) if layers else []
    ranked = sorted(blocks, key=lambda b: b.priority)
    k = _prefix(state, ranked)
    block_of = {n: b.index for b in blocks for n in b.layers}
    if k is None:
        best = min(state.measured, key=lambda s: (state.measured[s][2], len(s)))
        best_result = state.result(_describe([n for n in order if n in best], by_name, block_of, macs, set()),
                                   blocks, latency_source)
        raise BudgetUnreachable(
            f"no INT8/float assignment meets the accuracy budget {budget.to_json()}; the best reached, with "
            f"{len(best)} of {len(order)} layers float, misses: "
            + "; ".join(state.measured[best][1])
            + f" (searched {best_result.evaluations} variants in {best_result.seconds:.1f} s)",
            best_result,
        )
    kept = {n for block in ranked[:k] for n in block.layers}
    kept = _prune(state, kept, order, macs, settings.prune_evaluations)
    islands = _islands(kept, order) if settings.close_islands else set()
    if islands and state.holds(frozenset(kept | islands), "islands"):
        kept |= islands
    else:
        islands = set()
    return state.result(_describe([n for n in order if n in kept], by_name, block_of, macs, islands), blocks,
                        latency_source)


def _describe(names: Sequence[str], by_name: dict[str, Layer], block_of: dict[str, int], macs: dict[str, float],
              islands: set[str]) -> list[dict[str, Any]]:
    """The manifest's kept-float entries: block, MACs and why each layer stayed float."""
    negligible = NEGLIGIBLE_MACS_SHARE * sum(macs.values())
    entries = []
    for name in names:
        if name in islands:
            reason = "lone INT8 layer between float neighbours: Q/DQ around it would cost more than INT8 saves"
        elif macs.get(name, 0.0) <= negligible:
            reason = "in a float region, of negligible compute: INT8 would not make it faster"
        else:
            reason = "in a block whose float version removed the most noise per speed lost; returning it to INT8 " \
                     "broke the budget or was not tried"
        entries.append({"node": name, "op_type": by_name[name].op_type, "block": block_of.get(name),
                        "macs": macs.get(name, 0.0), "reason": reason})
    return entries

