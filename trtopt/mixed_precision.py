"""Automatic mixed precision: keep the most harmful INT8 layers float until an accuracy budget holds.

The search, and why it is cheap (a few dozen variant evaluations at most, not two per layer):

1. Evaluate the full INT8 variant on the held-out data; if it meets the budget, nothing stays float.
2. Rank the layers once (:func:`trtopt.int8_eval.noise_ranking`: one run of FP32 and INT8 with every
   layer's tensors exposed, on two batches) by the noise each adds. Layers whose added noise falls
   in the same power-of-two band are *equally harmful*; among those the one with fewer MACs (the
   latency proxy: its INT8 version gains little) comes first, so it is kept float first.
3. Keep the top 1, 2, 4, ... layers float until the budget holds, then bisect between the last miss
   and the first hit for the smallest prefix that holds. The noise ranking is only an estimate, so
   this prefix is usually far larger than needed.
4. Prune it: split the float set into contiguous spans in graph order (halves, then quarters, ...),
   and try returning each span to INT8, spans with the most MACs first; a return is kept when the
   budget still holds. Contiguous spans return neighbours together, so pruning does not scatter
   lone INT8 layers between float ones. Spans with negligible MACs (under 0.1% of the model's
   quantized MACs) are not tried: INT8 would not make them faster. Pruning stops after
   :attr:`SearchSettings.prune_evaluations` variants.
5. Close islands: an INT8 layer whose graph-order neighbours are both float would pay a quantize
   and a dequantize for one layer, which is usually slower than float, so it joins the float set if
   the budget still holds (one more variant).
6. With every layer float the model is FP32 again, so an accuracy budget can always be met; a budget
   with ``speedup`` (engine vs FP32 latency on the held-out batches, measured on the CPU with ONNX
   Runtime) may not be: then the search fails with the best variant reached (the smallest
   :meth:`AccuracyBudget.shortfall`), and the build writes nothing.

Every variant reuses the one calibration and runs on the held-out batches only. Layers kept float
stay FP32 (the ONNX Runtime CPU backend has no FP16 kernels worth using). Each kept layer is
recorded with its rank, the noise it added, its MACs and the reason it stayed float; the search's
cost (variants evaluated, seconds) and every evaluated variant are reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trtopt.budget import AccuracyBudget
from trtopt.errors import TrtoptError
from trtopt.int8_eval import Evaluation, Evaluator, Layer, RankedLayer, noise_ranking

NEGLIGIBLE_MACS_SHARE = 1e-3  # a span below this share of the quantized MACs gains nothing from INT8


@dataclass(frozen=True)
class SearchSettings:
    """How much the search may spend beyond the prefix search."""

    prune_evaluations: int = 24  # halves to sixteenths of the float set need 2 + 4 + 8 + 16; fewer suffice often
    close_islands: bool = True


@dataclass
class SearchResult:
    """What stayed float and why, the chosen variant, and what the search cost."""

    kept_float: list[dict[str, Any]]  # [{"node", "op_type", "rank", "added_noise", "macs", "reason"}]
    chosen: Evaluation
    speedup: float | None
    evaluations: int
    seconds: float
    tried: list[dict[str, Any]]  # every evaluated variant: {"phase", "float_layers", "shortfall", "problems"}

    @property
    def float_nodes(self) -> list[str]:
        return [entry["node"] for entry in self.kept_float]

    def to_json(self) -> dict[str, Any]:
        return {
            "kept_float": self.kept_float,
            "float_precision": "fp32",
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "speedup": self.speedup,
            "tried": self.tried,
        }


class BudgetUnreachable(TrtoptError):
    """No assignment of layers to float met the budget; carries the best one reached."""

    def __init__(self, message: str, best: SearchResult) -> None:
        super().__init__(message)
        self.best = best


def harm_order(ranking: Sequence[RankedLayer]) -> list[RankedLayer]:
    """Most harmful first; equally harmful (same power of two of added noise) by fewest MACs first."""

    def key(item: RankedLayer) -> tuple[float, float, float]:
        noise = item.added_noise
        bucket = math.inf if math.isinf(noise) else (math.floor(math.log2(noise)) if noise > 0 else -math.inf)
        return (-bucket, item.macs, -noise)

    return sorted(ranking, key=key)


class _Search:
    """The state of one search: every variant measured, keyed by its float set."""

    def __init__(self, evaluator: Evaluator, budget: AccuracyBudget) -> None:
        self.evaluator = evaluator
        self.budget = budget
        self.measured: dict[frozenset[str], tuple[Evaluation, list[str], float]] = {}
        self.tried: list[dict[str, Any]] = []
        self.start = (evaluator.evaluations, evaluator.seconds)

    def holds(self, float_layers: frozenset[str], phase: str) -> bool:
        if float_layers not in self.measured:
            evaluation = self.evaluator.evaluate(float_layers)
            speed = self.speedup(evaluation)
            problems = self.budget.violations(evaluation.report, speed)
            shortfall = self.budget.shortfall(evaluation.report, speed)
            self.measured[float_layers] = (evaluation, problems, shortfall)
            self.tried.append(
                {
                    "phase": phase,
                    "float_layers": len(float_layers),
                    "shortfall": round(shortfall, 6),
                    "problems": problems,
                }
            )
        return not self.measured[float_layers][1]

    def speedup(self, evaluation: Evaluation) -> float:
        return self.evaluator.heldout.fp32_latency_ms / max(evaluation.latency_ms, 1e-9)

    def result(self, kept: list[dict[str, Any]]) -> SearchResult:
        evaluation = self.measured[frozenset(entry["node"] for entry in kept)][0]
        return SearchResult(
            kept,
            evaluation,
            self.speedup(evaluation),
            self.evaluator.evaluations - self.start[0],
            self.evaluator.seconds - self.start[1],
            self.tried,
        )


def _prefix(search: _Search, ranking: Sequence[RankedLayer]) -> int | None:
    """Smallest k whose top-k float holds (doubling, then bisection), or None when even all float misses."""

    def holds(k: int) -> bool:
        return search.holds(frozenset(item.layer.name for item in ranking[:k]), "prefix")

    low, high = 0, None  # low: largest k known to miss; high: smallest k known to hold
    k = 1
    while k < len(ranking):
        if holds(k):
            high = k
            break
        low, k = k, 2 * k
    if high is None:
        high = len(ranking) if ranking and holds(len(ranking)) else None
    if high is None:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle
    return high


def _prune(search: _Search, kept: set[str], order: list[str], macs: dict[str, float], limit: int) -> set[str]:
    """Return contiguous graph-order spans of ``kept`` to INT8 while the budget holds, most MACs first."""
    negligible = NEGLIGIBLE_MACS_SHARE * sum(macs.values())
    spent, size = 0, max(len(kept) // 2, 1)
    while spent < limit and kept:
        in_order = [name for name in order if name in kept]
        spans = [in_order[i : i + size] for i in range(0, len(in_order), size)]
        spans = [s for s in spans if sum(macs[n] for n in s) > negligible]
        for span in sorted(spans, key=lambda s: -sum(macs[n] for n in s)):
            if spent >= limit:
                break
            candidate = kept - set(span)
            if frozenset(candidate) not in search.measured:
                spent += 1
            if search.holds(frozenset(candidate), "prune"):
                kept = candidate
        if size == 1:
            break
        size = max(size // 2, 1)
    return kept


def _islands(kept: set[str], order: list[str]) -> set[str]:
    """INT8 layers whose graph-order neighbours are both float."""
    return {order[i] for i in range(1, len(order) - 1) if order[i] not in kept and {order[i - 1], order[i + 1]} <= kept}


def search(
    evaluator: Evaluator, layers: Sequence[Layer], budget: AccuracyBudget, settings: SearchSettings | None = None
) -> SearchResult:
    """A small float set that makes ``budget`` hold (see the module docstring)."""
    settings = settings or SearchSettings()
    state = _Search(evaluator, budget)
    if state.holds(frozenset(), "int8"):
        return state.result([])
    ranking = harm_order(noise_ranking(evaluator, layers)) if layers else []
    by_name = {item.layer.name: (rank, item) for rank, item in enumerate(ranking, 1)}
    k = _prefix(state, ranking)
    if k is None:
        best = min(state.measured, key=lambda s: (state.measured[s][2], len(s)))
        best_result = state.result(_describe(sorted(best, key=lambda n: by_name[n][0]), by_name, set()))
        raise BudgetUnreachable(
            f"no INT8/float assignment meets the accuracy budget {budget.to_json()}; the best reached, with "
            f"{len(best)} of {len(ranking)} layers float, misses: "
            + "; ".join(state.measured[best][1])
            + f" (searched {best_result.evaluations} variants in {best_result.seconds:.1f} s)",
            best_result,
        )
    order = [layer.name for layer in layers]
    macs = {item.layer.name: item.macs for item in ranking}
    kept = _prune(state, {item.layer.name for item in ranking[:k]}, order, macs, settings.prune_evaluations)
    islands = _islands(kept, order) if settings.close_islands else set()
    if islands and state.holds(frozenset(kept | islands), "islands"):
        kept |= islands
    else:
        islands = set()
    return state.result(_describe([n for n in order if n in kept], by_name, islands))


def _describe(names: Sequence[str], by_name: dict[str, tuple[int, RankedLayer]], islands: set[str]) -> list[dict]:
    """The manifest's kept-float entries: rank in the harm order, added noise, MACs and why it stayed float."""
    negligible = NEGLIGIBLE_MACS_SHARE * sum(item.macs for _, item in by_name.values())
    entries = []
    for name in names:
        rank, item = by_name[name]
        if name in islands:
            reason = "lone INT8 layer between float neighbours: Q/DQ around it would cost more than INT8 saves"
        elif item.macs <= negligible:
            reason = "harmful and of negligible compute: INT8 would not make it faster, so float costs nothing"
        else:
            reason = "among the most harmful layers; returning it to INT8 broke the budget or was not tried"
        entries.append(
            {
                "node": name,
                "op_type": item.layer.op_type,
                "rank": rank,
                "added_noise": item.added_noise,
                "macs": item.macs,
                "reason": reason,
            }
        )
    return entries
