"""Automatic mixed precision: keep the most harmful INT8 layers float until an accuracy budget holds.

The search, and why it is cheap (a handful of variant evaluations, not two per layer):

1. Evaluate the full INT8 variant on the held-out data; if it meets the budget, nothing stays float.
2. Rank the layers once by the noise each adds (:func:`trtopt.int8_eval.noise_ranking`: one run of
   FP32 and INT8 with every layer's tensors exposed, on two batches).
3. Keep the top 1, 2, 4, ... layers float until the budget holds, then bisect between the last miss
   and the first hit for the smallest prefix that holds. The accuracy of "top k float" improves
   with k nearly monotonically, which is what makes the bisection sound in practice; every
   evaluated variant is kept, and the answer is the smallest k measured to meet the budget.
4. With every layer float the model is FP32 again, so an accuracy budget can always be met; a budget
   with ``speedup`` (engine vs FP32 latency on the held-out batches, measured on the CPU with ONNX
   Runtime) may not be: then the search fails with the best variant reached (the smallest
   :meth:`AccuracyBudget.shortfall`), and the build writes nothing.

Layers kept float stay FP32 (the ONNX Runtime CPU backend has no FP16 kernels worth using). Each
kept layer is recorded with its rank and the noise it added, and the search's cost (variants
evaluated, seconds) is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trtopt.budget import AccuracyBudget
from trtopt.errors import TrtoptError
from trtopt.int8_eval import Evaluation, Evaluator, Layer, noise_ranking


@dataclass
class SearchResult:
    """What stayed float and why, the chosen variant, and what the search cost."""

    kept_float: list[dict[str, Any]]  # [{"node", "op_type", "rank", "added_noise"}]
    chosen: Evaluation
    speedup: float | None
    evaluations: int
    seconds: float
    tried: list[dict[str, Any]]  # every evaluated prefix: {"float_layers", "shortfall", "problems"}

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


def _speedup(evaluator: Evaluator, evaluation: Evaluation) -> float:
    return evaluator.heldout.fp32_latency_ms / max(evaluation.latency_ms, 1e-9)


def search(evaluator: Evaluator, layers: Sequence[Layer], budget: AccuracyBudget) -> SearchResult:
    """Smallest prefix of the noise ranking to keep float so that ``budget`` holds (see the module docstring)."""
    start_evaluations, start_seconds = evaluator.evaluations, evaluator.seconds
    ranking = noise_ranking(evaluator, layers) if layers else []
    measured: dict[int, tuple[Evaluation, list[str], float]] = {}

    def measure(k: int) -> bool:
        if k not in measured:
            evaluation = evaluator.evaluate(layer.name for layer, _ in ranking[:k])
            speed = _speedup(evaluator, evaluation)
            measured[k] = (
                evaluation,
                budget.violations(evaluation.report, speed),
                budget.shortfall(evaluation.report, speed),
            )
        return not measured[k][1]

    def result(k: int) -> SearchResult:
        evaluation = measured[k][0]
        kept = [
            {"node": layer.name, "op_type": layer.op_type, "rank": rank, "added_noise": noise}
            for rank, (layer, noise) in enumerate(ranking[:k], 1)
        ]
        tried = [
            {"float_layers": n, "shortfall": round(measured[n][2], 6), "problems": measured[n][1]}
            for n in sorted(measured)
        ]
        return SearchResult(
            kept,
            evaluation,
            _speedup(evaluator, evaluation),
            evaluator.evaluations - start_evaluations,
            evaluator.seconds - start_seconds,
            tried,
        )

    if measure(0):
        return result(0)
    low, high = 0, None  # low: largest k known to miss; high: smallest k known to hold
    k = 1
    while k < len(ranking):
        if measure(k):
            high = k
            break
        low, k = k, 2 * k
    if high is None:
        high = len(ranking) if ranking and measure(len(ranking)) else None
    if high is None:
        best = min(measured, key=lambda n: (measured[n][2], n))
        best_result = result(best)
        raise BudgetUnreachable(
            f"no INT8/float assignment meets the accuracy budget {budget.to_json()}; the best reached, with "
            f"{best} of {len(ranking)} layers float, misses: "
            + "; ".join(measured[best][1])
            + f" (searched {best_result.evaluations} variants in {best_result.seconds:.1f} s)",
            best_result,
        )
    while high - low > 1:
        middle = (low + high) // 2
        if measure(middle):
            high = middle
        else:
            low = middle
    return result(high)
