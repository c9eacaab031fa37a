"""Accuracy metrics per output: 3-D and dense outputs, IoU, NaN/zero outputs, user metrics, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from trtopt.accuracy import AccuracyAccumulator, MetricSettings, compare_outputs, far_off_problems, parse_class_axis
from trtopt.budget import AccuracyBudget
from trtopt.errors import UsageError
from trtopt.quantization.calibrators import AUTO_CANDIDATES, auto_bins, expected_errors, mse_bins

rng = np.random.default_rng(0)


def test_agreement_over_the_class_axis_of_a_sequence_output():
    """[N, T, C]: agreement per time step; one changed step of 4 x 6 is 1/24, not a flattened argmax."""
    ref = rng.normal(size=(4, 6, 12)).astype(np.float32)
    cand = ref.copy()
    cand[2, 3] = -cand[2, 3]  # flips the argmax of one step
    report = compare_outputs({"seq": ref}, {"seq": cand})
    assert report.outputs["seq"].class_axis == 2
    assert report.outputs["seq"].agreement == pytest.approx(23 / 24)
    # the class axis can be chosen: axis 1 of [N, T, C] compares argmax over T at each of the C classes
    by_time = compare_outputs({"seq": ref}, {"seq": cand}, settings=MetricSettings(class_axis=1))
    assert by_time.outputs["seq"].class_axis == 1 and by_time.outputs["seq"].agreement < 1.0
    default, per_output = parse_class_axis("seq:1,maps:none")
    assert default == "auto" and per_output == {"seq": 1, "maps": None}
    with pytest.raises(UsageError, match="class-axis"):
        compare_outputs({"seq": ref}, {"seq": cand}, settings=MetricSettings(class_axis=0))


def test_dense_probability_map_gets_cosine_snr_and_iou_and_every_output_is_reported():
    ref_map = rng.uniform(size=(3, 1, 8, 8))
    cand_map = ref_map.copy()
    cand_map[0, 0, :4] = 0.0  # a quarter of the first sample's mask lost
    logits = rng.normal(size=(3, 5))
    report = compare_outputs({"logits": logits, "map": ref_map}, {"logits": logits, "map": cand_map})
    dense = report.outputs["map"]
    assert dense.agreement is None and dense.class_axis is None
    ref_mask = ref_map > 0.5
    cand_mask = cand_map > 0.5
    assert dense.iou == pytest.approx((ref_mask & cand_mask).sum() / (ref_mask | cand_mask).sum())
    assert 0 < dense.snr_db < 60 and 0.5 < dense.cosine_similarity < 1.0
    assert report.outputs["logits"].agreement == 1.0 and report.outputs["logits"].snr_db == float("inf")
    assert report.snr_db == dense.snr_db and report.iou == dense.iou  # top level = worst output
    data = report.to_json()
    assert set(data["outputs"]) == {"logits", "map"} and data["outputs"]["logits"]["snr_db"] is None
    # unbounded dense outputs (not probabilities) get no IoU
    assert compare_outputs(ref_map * 10 - 5, ref_map * 10 - 5).iou is None


def test_nan_and_inf_outputs_count_as_maximal_error_and_fail_budgets():
    ref = rng.normal(size=(4, 10))
    cand = ref.copy()
    cand[1, 3] = np.nan
    cand[2, 0] = np.inf
    report = compare_outputs(ref, cand)
    out = report.outputs["output"]
    assert out.nonfinite == 2 and out.max_abs_error == float("inf") and out.snr_db == float("-inf")
    assert out.agreement == pytest.approx(0.5) and report.cosine_similarity == pytest.approx(0.0)  # two samples at -1
    assert any("NaN/Inf" in p for p in far_off_problems(report))
    problems = AccuracyBudget.parse("cosine=0.5,snr=10,max-abs-error=1").violations(report)
    assert len(problems) == 3
    assert report.to_json()["max_abs_error"] is None and report.to_json()["nonfinite"] == 2
    # an all-NaN candidate of an all-NaN reference compares nothing: not a failure of the engine
    assert compare_outputs(np.full((2, 3), np.nan), np.full((2, 3), np.nan)).nonfinite == 0


def test_all_zero_candidate_is_not_a_perfect_match():
    ref = rng.normal(size=(8, 10))
    report = compare_outputs(ref, np.zeros_like(ref))
    assert report.cosine_similarity == 0.0 and report.snr_db == pytest.approx(0.0)
    assert AccuracyBudget.parse("cosine=0.99").violations(report)
    assert compare_outputs(np.zeros((2, 3)), np.zeros((2, 3))).cosine_similarity == 1.0  # both zero do match


def test_user_metric_plugs_in_and_budgets_name_it(tmp_path):
    script = tmp_path / "metric.py"
    script.write_text(
        "import numpy as np\n"
        "def exact(reference, candidate):\n"
        "    same = (reference['seq'].argmax(-1) == candidate['seq'].argmax(-1)).all(axis=1)\n"
        "    return {'line_agreement': float(same.mean())}\n"
    )
    ref = rng.normal(size=(4, 6, 12))
    cand = ref.copy()
    cand[0, 0] = -cand[0, 0]
    settings = MetricSettings(user_metrics=(f"{script}:exact",))
    acc = AccuracyAccumulator(settings)
    acc.update({"seq": ref[:2]}, {"seq": cand[:2]})
    acc.update({"seq": ref[2:]}, {"seq": cand[2:]})
    report = acc.report()
    assert report.user_metrics == {"line_agreement": pytest.approx(0.75)}  # averaged over samples
    budget = AccuracyBudget.parse("line_agreement=0.9,agreement@seq=0.9", user_metrics=True)
    assert budget.violations(report) == ["line_agreement 0.75 < budget 0.9"]
    with pytest.raises(UsageError, match="unknown metric"):
        AccuracyBudget.parse("line_agreement=0.9")
    with pytest.raises(UsageError, match="no output"):
        AccuracyBudget.parse("snr@nope=3").violations(report)
    with pytest.raises(UsageError, match="has no function"):
        AccuracyAccumulator(MetricSettings(user_metrics=(f"{script}:missing",)))


@pytest.mark.parametrize("flag", ["agreement=99", "cosine=1.5", "iou=-0.1", "max-abs-error=-1", "speedup=0",
                                  "snr=nan"])
def test_budget_limits_no_build_can_meet_are_usage_errors(flag):
    """A share written as a percentage (agreement=99) is refused before a search runs for nothing."""
    with pytest.raises(UsageError, match="can never be met"):
        AccuracyBudget.parse(flag)


def test_budget_limits_at_their_bounds_are_accepted():
    budget = AccuracyBudget.parse("agreement=1,cosine=-1,iou=0,max-abs-error=0,snr=-5,speedup=1000")
    assert [item.limit for item in budget.items] == [1.0, -1.0, 0.0, 0.0, -5.0, 1000.0]


def test_auto_calibration_picks_per_tensor_by_quantization_error():
    gaussian = np.histogram(np.abs(rng.normal(size=100_000)), bins=2048)[0]
    kept, chosen = auto_bins(gaussian, gaussian)
    errors = expected_errors(gaussian)
    assert (
        chosen in AUTO_CANDIDATES
        and errors[kept - 1] <= errors[-1]
        and errors[kept - 1] == errors[mse_bins(gaussian) - 1]
    )
    # a uniform |x| has no tail worth clipping: the full range (or a clip next to it) wins
    uniform = np.full(2048, 50)
    kept, _ = auto_bins(uniform, uniform)
    assert kept >= 2000
    zeros_only = np.zeros(2048, np.int64)
    zeros_only[0] = 10
    assert auto_bins(zeros_only, np.zeros(2048, np.int64)) == (2048, "max")
