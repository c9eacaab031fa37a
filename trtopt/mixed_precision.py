"""Automatic mixed precision: quantize the most, and most contiguous, INT8 layers an accuracy budget allows.

The search, measured rather than estimated at every step, and bounded (about 2 x blocks +
trim_evaluations variants, each one Q/DQ pass and one run over the held-out batches):

1. Evaluate the full INT8 variant; if it meets the budget, nothing stays float.
2. **Probe blocks.** Split the quantized layers, in graph order, into ``blocks`` contiguous blocks
   and evaluate each block *quantized alone* (everything else float). Its *harm* is the output
   noise that block causes by itself, downstream amplification included (noise-to-signal power
   summed over outputs: continuous even when the budget's metric is coarse, such as identical
   decoded lines out of 30; independent noises add, so harms of blocks add up). Its *gain* is what
   INT8 buys there: its share of the quantized MACs times the full INT8 variant's gain over FP32,
   which with ONNX Runtime as the target is *measured* (:mod:`trtopt.latency`: FP32 timed in the same
   interleaved rounds); elsewhere the MACs share alone, an estimate (the result says which).
   Why not rank layers by the noise each adds in the full INT8 model, or by what leaving one block
   float buys back: errors compound, so in a noisy model every single change looks negligible
   (PP-OCRv4's recognizer: a one-pass noise ranking needed 118 of 127 layers float before pruning;
   leave-alone-in-float gains were all under 12% of the total noise).
3. **Greedy over the block ranking.** Blocks are ranked by harm per gain, least first; a block whose
   INT8 version gains nothing (the full INT8 variant is not faster, or the block holds no MACs)
   comes last. Each block in turn is quantized when the accuracy still holds, else it stays float.
4. **Trim** the float runs: move each run's edges inward (doubling, then bisection, per edge; runs
   with the most MACs first) while the accuracy holds. A returned piece joins its INT8 neighbour,
   so the float regions stay contiguous and no new boundary appears: on ONNX Runtime's CPU each
   float/INT8 boundary is a quantize or dequantize, and a layout change, of a whole activation.
   (Returning arbitrary pieces from inside a run, tried first, left INT8 islands in the PP-OCRv4
   recognizer's backbone; that engine measured 0.94x FP32 on a loaded 2-core CPU.) Stops after
   :attr:`SearchSettings.trim_evaluations` new variants.
5. **Close islands**: an INT8 run between two float runs holding under 2% of the quantized MACs
   pays two boundaries for little compute, so it joins the float set if the budget still holds.
6. Steps 3 and 4 judge accuracy only (returning layers to INT8 makes a variant faster); the chosen
   variant is then timed against FP32 and judged on the whole budget, ``speedup`` included. With
   every layer float the model is FP32 again, so an accuracy budget can always be met; a budget
   with ``speedup`` may not be: then the search fails with the best variant reached (the smallest
   :meth:`AccuracyBudget.shortfall`), and the build writes nothing.

Every variant reuses the one calibration. The result records each kept layer with its block and
MACs and why it stayed float, every block's harm and gain, the search's cost (variants, seconds)
and every evaluated variant with its measured speedup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trtopt.budget import SPEEDUP, AccuracyBudget
from trtopt.errors import TrtoptError
from trtopt.int8_eval import Evaluation, Evaluator, Layer, macs_per_sample
from trtopt.sensitivity import noise_to_signal

NEGLIGIBLE_MACS_SHARE = 1e-3  # a piece below this share of the quantized MACs gains nothing from INT8
ISLAND_MACS_SHARE = 0.02  # an INT8 run between float runs with less compute costs more at its boundaries


@dataclass(frozen=True)
class SearchSettings:
    """How much the search may spend: blocks probed, refinement variants."""

    blocks: int = 12
    trim_evaluations: int = 16
    close_islands: bool = True


@dataclass(frozen=True)
class Block:
    """A contiguous graph-order run of layers, probed quantized alone."""

    index: int
    layers: tuple[str, ...]
    harm: float  # output noise-to-signal with only this block INT8
    gain: float  # its MACs share of the full INT8 variant's measured gain over FP32 (or of the MACs, estimated)

    @property
    def priority(self) -> tuple[int, float]:
        """Blocks that gain speed first, least harm per gain first; blocks that gain nothing last, least harm first."""
        if self.gain <= 0:
            return (1, self.harm)
        return (0, self.harm / self.gain)


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
    """The state of one search: every variant measured, keyed by its float set.

    ``holds(..., accuracy_only=True)`` ignores a ``speedup`` item: moves that return layers to INT8 make
    a variant faster, so they only have to keep the accuracy; the full budget is checked at the end.
    """

    def __init__(self, evaluator: Evaluator, budget: AccuracyBudget) -> None:
        self.evaluator = evaluator
        self.budget = budget
        self.accuracy_budget = AccuracyBudget(tuple(item for item in budget.items if item.metric != SPEEDUP))
        self.measured: dict[frozenset[str], tuple[Evaluation, list[str], float, bool]] = {}
        self.tried: list[dict[str, Any]] = []
        self.start = (evaluator.evaluations, evaluator.seconds)

    def evaluation(self, float_layers: frozenset[str], phase: str, timed: bool = False) -> Evaluation:
        """The variant's accuracy; ``timed``: with its speedup over FP32 too (measured once, where measurable)."""
        known = self.measured.get(float_layers)
        if known is None or (timed and known[0].speedup is None and self.evaluator.latency is not None):
            evaluation = self.evaluator.evaluate(float_layers, timed=timed)
            problems = self.budget.violations(evaluation.report, evaluation.speedup)
            shortfall = self.budget.shortfall(evaluation.report, evaluation.speedup)
            accurate = not self.accuracy_budget.violations(evaluation.report)
            self.measured[float_layers] = (evaluation, problems, shortfall, accurate)
            self.tried.append(
                {
                    "phase": phase,
                    "float_layers": len(float_layers),
                    "shortfall": round(shortfall, 6),
                    "noise_to_signal": noise_to_signal(evaluation.report),
                    "speedup": None if evaluation.speedup is None else round(evaluation.speedup, 4),
                    "latency_ms": None if evaluation.latency_ms is None else round(evaluation.latency_ms, 4),
                    "problems": problems,
                }
            )
        return self.measured[float_layers][0]

    def holds(self, float_layers: frozenset[str], phase: str, accuracy_only: bool = False) -> bool:
        """Accuracy-only checks run untimed; the full budget is judged on a timed evaluation."""
        self.evaluation(float_layers, phase, timed=not accuracy_only)
        _, problems, _, accurate = self.measured[float_layers]
        return accurate if accuracy_only else not problems

    def unreachable(self, layers: int, describe: Callable[[frozenset[str]], list[dict[str, Any]]],
                    blocks: list[Block], latency_source: str) -> BudgetUnreachable:
        """The failure carrying the best variant reached (smallest shortfall, then fewest float layers)."""
        best = min(self.measured, key=lambda s: (self.measured[s][2], len(s)))
        best_result = self.result(describe(best), blocks, latency_source)
        return BudgetUnreachable(
            f"no INT8/float assignment meets the accuracy budget {self.budget.to_json()}; the best reached, with "
            f"{len(best)} of {layers} layers float, misses: " + "; ".join(self.measured[best][1])
            + f" (searched {best_result.evaluations} variants in {best_result.seconds:.1f} s)",
            best_result,
        )

    def result(self, kept: list[dict[str, Any]], blocks: list[Block], latency_source: str) -> SearchResult:
        evaluation = self.measured[frozenset(entry["node"] for entry in kept)][0]
        return SearchResult(
            kept,
            evaluation,
            self.evaluator.evaluations - self.start[0],
            self.evaluator.seconds - self.start[1],
            self.tried,
            [{"index": b.index, "layers": len(b.layers), "first": b.layers[0], "last": b.layers[-1],
              "harm": b.harm, "gain": b.gain} for b in blocks],
            latency_source,
        )


def split_blocks(order: Sequence[str], count: int) -> list[tuple[str, ...]]:
    """``order`` in ``count`` contiguous runs of nearly equal length (fewer when there are fewer layers)."""
    count = max(1, min(count, len(order)))
    bounds = [round(i * len(order) / count) for i in range(count + 1)]
    return [tuple(order[bounds[i] : bounds[i + 1]]) for i in range(count)]


def _probe(search: _Search, runs: list[tuple[str, ...]], macs: dict[str, float], int8: Evaluation) -> list[Block]:
    """Each run quantized alone: measured harm; gain = the run's share of the MACs times what the full
    INT8 variant gains (measured speedup over FP32 minus one), or the MACs share alone where not measured.

    Timing each probe on its own was tried: a block is a few percent of the model, and on a loaded
    machine the measured gains of equal-cost blocks ranged from -0.15 to +0.24; the full variant's
    gain is one large difference, measured in interleaved rounds, that load does not flip."""
    everything = frozenset(n for run in runs for n in run)
    total = sum(macs.values()) or 1.0
    measured_gain = None if int8.speedup is None else max(int8.speedup - 1, 0.0)
    blocks = []
    for index, layers in enumerate(runs):
        evaluation = search.evaluation(everything - set(layers), "probe")
        harm = noise_to_signal(evaluation.report)
        share = sum(macs[n] for n in layers) / total
        gain = share if measured_gain is None else share * measured_gain
        blocks.append(Block(index, layers, harm if math.isfinite(harm) else math.inf, gain))
    return blocks


def _greedy(search: _Search, ranked: Sequence[Block], everything: frozenset[str]) -> set[str] | None:
    """Quantize the blocks in rank order, each kept INT8 when the accuracy still holds (else it stays float);
    None when not even all float holds.

    One variant per block rather than a bisection over the ranking: a coarse metric is not monotonic in
    the noise (30 decoded lines: one block alone at a noise-to-signal of 0.0013 flipped a line, a larger
    set at 0.012 flipped none), and a bisection stops at the first such block; skipping it goes on."""
    kept = set(everything)
    if not search.holds(frozenset(kept), "greedy", accuracy_only=True):
        return None
    for block in ranked:
        candidate = kept - set(block.layers)
        if search.holds(frozenset(candidate), "greedy", accuracy_only=True):
            kept = candidate
    return kept


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


def _trim(search: _Search, kept: set[str], order: list[str], macs: dict[str, float], limit: int) -> set[str]:
    """Move each float run's edges inward while the accuracy holds, runs with the most MACs first.

    A returned piece joins its INT8 neighbour, so no new float/INT8 boundary appears (on ONNX Runtime's
    CPU each one is a quantize or dequantize and a layout change of a whole activation). Stops after
    ``limit`` new variants."""
    spent = 0
    for run in sorted(contiguous_runs(kept, order), key=lambda r: -sum(macs[n] for n in r)):
        for edge in (run, run[::-1]):
            edge = [n for n in edge if n in kept]
            moved, used = _move_edge(search, kept, edge, limit - spent)
            kept = kept - set(edge[:moved])
            spent += used
    return kept


def _move_edge(search: _Search, kept: set[str], edge: list[str], limit: int) -> tuple[int, int]:
    """(largest t whose ``edge[:t]`` returned to INT8 keeps the accuracy, new variants spent): doubling, then
    bisection, within ``limit`` new variants."""
    used = 0

    def holds(t: int) -> bool:
        nonlocal used
        candidate = frozenset(kept - set(edge[:t]))
        used += candidate not in search.measured
        return search.holds(candidate, "trim", accuracy_only=True)

    low, high, t = 0, None, 1  # low: largest t known to hold; high: smallest t known to miss
    while edge and used < limit:
        t = min(t, len(edge))
        if not holds(t):
            high = t
            break
        low = t
        if t == len(edge):
            return low, used
        t *= 2
    while high is not None and high - low > 1 and used < limit:
        middle = (low + high) // 2
        if holds(middle):
            low = middle
        else:
            high = middle
    return low, used


def _islands(kept: set[str], order: list[str], macs: dict[str, float]) -> set[str]:
    """INT8 runs between two float runs that hold under ISLAND_MACS_SHARE of the quantized MACs."""
    total = sum(macs.values()) or 1.0
    position = {name: index for index, name in enumerate(order)}
    found: set[str] = set()
    for run in contiguous_runs(set(order) - kept, order):
        before, after = position[run[0]] - 1, position[run[-1]] + 1
        enclosed = before >= 0 and after < len(order) and order[before] in kept and order[after] in kept
        if enclosed and sum(macs.get(n, 0.0) for n in run) < ISLAND_MACS_SHARE * total:
            found |= set(run)
    return found


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
    if state.holds(frozenset(), "int8"):
        return state.result([], [], latency_source)
    order = [layer.name for layer in layers]
    by_name = {layer.name: layer for layer in layers}
    macs = macs_per_sample(evaluator, layers) if layers else {}
    int8 = state.evaluation(frozenset(), "int8", timed=True)
    blocks = _probe(state, split_blocks(order, settings.blocks), macs, int8) if layers else []
    ranked = sorted(blocks, key=lambda b: b.priority)
    everything = frozenset(order)
    block_of = {n: b.index for b in blocks for n in b.layers}

    def describe(names: frozenset[str], islands: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        return _describe([n for n in order if n in names], by_name, block_of, macs, islands)

    greedy = _greedy(state, ranked, everything)
    if greedy is None:
        raise state.unreachable(len(order), describe, blocks, latency_source)
    kept = _trim(state, greedy, order, macs, settings.trim_evaluations)
    islands = frozenset(_islands(kept, order, macs) if settings.close_islands else ())
    if islands and state.holds(frozenset(kept | islands), "islands"):
        kept |= islands
    else:
        islands = frozenset()
    if not state.holds(frozenset(kept), "final"):  # a speedup item the most accurate INT8 share still misses
        raise state.unreachable(len(order), describe, blocks, latency_source)
    return state.result(describe(frozenset(kept), islands), blocks, latency_source)


def _describe(names: Sequence[str], by_name: dict[str, Layer], block_of: dict[str, int], macs: dict[str, float],
              islands: frozenset[str]) -> list[dict[str, Any]]:
    """The manifest's kept-float entries: block, MACs and why each layer stayed float."""
    negligible = NEGLIGIBLE_MACS_SHARE * sum(macs.values())
    entries = []
    for name in names:
        if name in islands:
            reason = "INT8 run between float runs with under 2% of the MACs: its boundaries cost more than INT8 saves"
        elif macs.get(name, 0.0) <= negligible:
            reason = "in a float region, of negligible compute: INT8 would not make it faster"
        else:
            reason = "in a block whose INT8 version costs the most accuracy per speed gained; returning it to " \
                     "INT8 broke the budget or was not tried"
        entries.append({"node": name, "op_type": by_name[name].op_type, "block": block_of.get(name),
                        "macs": macs.get(name, 0.0), "reason": reason})
    return entries

