"""CLI argument groups: one spelling, one default and one help per concept, in every verb."""
from __future__ import annotations

import argparse

from conftest import run_cli
from trtopt.cli import build_parser
from trtopt.cli.groups import CALIBRATION, QDQ, build_settings
from trtopt.settings import BuildSettings


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_build_flags_parse_into_settings_with_the_dataclass_defaults() -> None:
    args = _parse("build", "m.onnx")
    assert build_settings(args) == BuildSettings(), "a flag left out means the settings default, nothing else"
    args = _parse("build", "m.onnx", "--calib-data", "digits", "--calib-method", "max", "--threads", "2",
                  "--workspace", "1G", "--exclude-nodes", "a,b", "--max-shapes", "input:4x3x16x16", "--contexts", "2",
                  "--class-axis", "1", "--metric", "m.py:f", "--force", "--name", "n")
    settings = build_settings(args, precision="int8")
    assert settings.calibration.data == "digits" and settings.calibration.method == "max"
    assert settings.engine.threads == 2 and settings.engine.workspace_bytes == 1 << 30 and settings.engine.contexts == 2
    assert settings.qdq.exclude_nodes == ("a", "b") and settings.shapes.max_shapes == "input:4x3x16x16"
    assert settings.accuracy.metrics.class_axis == 1 and settings.accuracy.metrics.user_metrics == ("m.py:f",)
    assert settings.force and settings.name == "n" and settings.precision == "int8"


def test_old_spellings_stay_as_hidden_aliases() -> None:
    old = _parse("calibrate", "m.onnx", "--method", "percentile", "--max-samples", "4")
    new = _parse("calibrate", "m.onnx", "--calib-method", "percentile", "--calib-samples", "4")
    assert CALIBRATION.parse(old) == CALIBRATION.parse(new)
    assert CALIBRATION.parse(_parse("quantize", "m.onnx", "-o", "q.onnx", "--scales", "t.json")).table == "t.json"
    assert _parse("build", "m.onnx", "--builder-optimization-level", "2").engine_opt_level == 2
    help_text = build_parser()._subparsers._group_actions[0].choices["calibrate"].format_help()
    assert "--calib-method" in help_text and "--method" not in help_text.replace("--calib-method", "")


def test_fp16_io_means_the_same_in_build_and_quantize() -> None:
    for argv in (("build", "m.onnx", "--fp16", "--fp16-io"),
                 ("quantize", "m.onnx", "-o", "q.onnx", "--fp16", "--fp16-io")):
        assert QDQ.parse(_parse(*argv)).keep_io_types is False
        assert QDQ.parse(_parse(*argv[:-1])).keep_io_types is True


def test_global_flags_are_accepted_after_the_verb() -> None:
    before, after = _parse("-q", "-v", "build", "m.onnx"), _parse("build", "m.onnx", "-q", "-v", "--debug")
    assert (before.quiet, before.verbose, before.debug) == (True, 1, False)
    assert (after.quiet, after.verbose, after.debug) == (True, 1, True)
    assert _parse("-q", "build", "m.onnx").quiet, "a flag before the verb is not reset by the verb's parser"


def test_build_help_states_the_default_batch_cap() -> None:
    proc = run_cli("build", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "batches 1..32" in text and "ONNX Runtime engine rejects a larger batch too" in text
