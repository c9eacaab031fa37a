"""Argument groups: each adds the flags of one settings part to a verb and parses them back into it.

``build``, ``calibrate``, ``quantize``, ``sensitivity`` and ``bench`` compose these groups instead of
declaring flags themselves, so a concept has one spelling, one default (the settings field's) and
one help text (the field's ``help`` metadata) in every verb. Old spellings stay accepted as hidden
aliases (``--method`` for ``--calib-method``, ``--scales`` for ``--calib-table``, ``--max-samples``
for ``--calib-samples``). A verb that needs only some of a group's flags names them with ``only=``.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trtopt.settings import (AccuracySettings, BuildSettings, CalibrationSettings, EngineSettings, QdqSettings,
                             ShapeSettings)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(text: str) -> int:
    """trtexec-style sizes: 4G, 512M, 1048576."""
    number, unit = text.strip()[:-1], text.strip()[-1:].upper()
    if unit not in _UNITS or not unit:
        number, unit = text.strip(), ""
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G, 512M or a byte count, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return int(value)


def names(text: str) -> tuple[str, ...]:
    """``a,b,c`` -> ("a", "b", "c")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Flag:
    """One flag of a settings field: its spellings, hidden old spellings and argparse options."""

    field: str
    spellings: tuple[str, ...]
    hidden: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # type, choices, metavar, action
    help: str | None = None  # for a flag that negates its field (--per-tensor sets per_channel False)


class Group:
    """The flags of one settings part (``part`` names it inside BuildSettings; None: BuildSettings itself)."""

    def __init__(self, title: str, settings_type: type, flags: Sequence[Flag], part: str | None = None) -> None:
        self.title = title
        self.settings_type = settings_type
        self.flags = {flag.field: flag for flag in flags}
        self.part = part
        self._fields = {f.name: f for f in dataclasses.fields(settings_type)}

    def dest(self, name: str) -> str:
        return f"{self.part or 'build'}_{name}"

    def add(self, parser: argparse.ArgumentParser, only: Sequence[str] | None = None,
            required: Sequence[str] = ()) -> None:
        """Add this group's flags (or `only` those fields) to `parser` under the group's title."""
        group = parser.add_argument_group(self.title)
        for name in only if only is not None else list(self.flags):
            flag, spec = self.flags[name], self._fields[name]
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            options = dict(flag.options)
            if options.get("action") not in ("store_true", "store_false") and "choices" not in options:
                options.setdefault("metavar", name.upper())
            text = flag.help or spec.metadata.get("help", "")
            if options.get("action") not in ("store_true", "store_false") and default not in (None, (), ""):
                text += f" (default: {default})"
            group.add_argument(*flag.spellings, dest=self.dest(name), default=default, help=text,
                               required=name in required, **options)
            if flag.hidden:  # accepted, not shown; SUPPRESS keeps the visible flag's default when absent
                group.add_argument(*flag.hidden, dest=self.dest(name), default=argparse.SUPPRESS,
                                   help=argparse.SUPPRESS, **options)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields this verb's parser has flags for, as given on the command line."""
        return {name: getattr(args, self.dest(name)) for name in self.flags if hasattr(args, self.dest(name))}

    def parse(self, args: argparse.Namespace) -> Any:
        """The settings part: parsed flags over the dataclass defaults."""
        return self.settings_type(**self.values(args))


class AccuracyGroup(Group):
    """Accuracy settings; ``--class-axis``, ``--iou-threshold`` and ``--metric`` parse into one MetricSettings."""

    def parse(self, args: argparse.Namespace) -> AccuracySettings:
        from trtopt.accuracy import MetricSettings, parse_class_axis

        values = self.values(args)
        if "metrics" in values:
            class_axis, iou_threshold, user_metrics = values["metrics"]
            default, per_output = parse_class_axis(class_axis)
            values["metrics"] = MetricSettings(default, per_output, iou_threshold, tuple(user_metrics))
        return AccuracySettings(**values)

    def add(self, parser: argparse.ArgumentParser, only: Sequence[str] | None = None,
            required: Sequence[str] = ()) -> None:
        fields = list(only if only is not None else self.flags)
        super().add(parser, [name for name in fields if name != "metrics"], required)
        if "metrics" in fields:
            _add_metric_flags(parser.add_argument_group("accuracy metrics"), self.dest("metrics"))


class _MetricFlags(argparse.Action):
    """Collects --class-axis / --iou-threshold / --metric into one (class_axis, iou, [metrics]) value."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        class_axis, iou, metrics = getattr(namespace, self.dest)
        if option_string == "--class-axis":
            class_axis = values
        elif option_string == "--iou-threshold":
            iou = float(values)
        else:
            metrics = [*metrics, values]
        setattr(namespace, self.dest, (class_axis, iou, metrics))


def _add_metric_flags(group: argparse._ArgumentGroup, dest: str) -> None:
    from trtopt.accuracy import DEFAULT_IOU_THRESHOLD

    default = (None, DEFAULT_IOU_THRESHOLD, [])
    group.add_argument("--class-axis", metavar="AXIS", dest=dest, default=default, action=_MetricFlags,
                       help="axis of class scores for agreement: an integer, 'none', or per output NAME:AXIS,... "
                            "(default: the last axis of rank-2 and rank-3 outputs; other outputs get cosine/SNR/IoU)")
    group.add_argument("--iou-threshold", dest=dest, metavar="T", action=_MetricFlags,
                       help=f"threshold for IoU of probability-map outputs (default: {DEFAULT_IOU_THRESHOLD})")
    group.add_argument("--metric", dest=dest, metavar="FILE.py:FN", action=_MetricFlags,
                       help="user accuracy metric: IMPORTS AND RUNS the Python file; FN(reference, candidate) gets "
                            "two dicts output name -> array per batch and returns {score name: number} (higher is "
                            "better); repeatable")


def _methods() -> list[str]:
    from trtopt.quantization.calibrators import METHODS

    return list(METHODS)


def _encodings() -> list[str]:
    from trtopt.quantization.encodings import ENCODINGS

    return list(ENCODINGS)


def _devices() -> list[str]:
    from trtopt.quantization.providers import DEVICES

    return list(DEVICES)


CALIBRATION = Group("calibration", CalibrationSettings, [
    Flag("data", ("--calib-data",), options={"metavar": "SRC"}),
    Flag("table", ("--calib-table",), hidden=("--scales",), options={"metavar": "JSON"}),
    Flag("method", ("--calib-method",), hidden=("--method",), options={"choices": _methods()}),
    Flag("percentile", ("--percentile",), options={"type": float}),
    Flag("samples", ("--calib-samples",), hidden=("--max-samples",), options={"type": int, "metavar": "N"}),
    Flag("seed", ("--seed",), options={"type": int}),
    Flag("nan_policy", ("--nan-policy",), options={"choices": ["error", "skip"]}),
    Flag("device", ("--calib-device",), options={"choices": _devices()}),
], part="calibration")

QDQ = Group("Q/DQ and FP16 conversion", QdqSettings, [
    Flag("encoding", ("--encoding",), options={"choices": _encodings()}),
    Flag("per_channel", ("--per-tensor",), options={"action": "store_false"},
         help="one scale per weight tensor instead of per output channel"),
    Flag("exclude_nodes", ("--exclude-nodes",), options={"type": names, "metavar": "N1,N2"}),
    Flag("exclude_op_types", ("--exclude-op-types",), options={"type": names, "metavar": "OP1,OP2"}),
    Flag("keep_io_types", ("--fp16-io",), options={"action": "store_false"},
         help="with --fp16: FP16 inputs and outputs too (default: they stay FP32)"),
], part="qdq")

SHAPES = Group("shapes (trtexec spelling)", ShapeSettings, [
    Flag("shapes", ("--shapes",), options={"metavar": "NAME:DxD,..."}),
    Flag("min_shapes", ("--min-shapes",), options={"metavar": "NAME:DxD,..."}),
    Flag("opt_shapes", ("--opt-shapes",), options={"metavar": "NAME:DxD,..."}),
    Flag("max_shapes", ("--max-shapes",), options={"metavar": "NAME:DxD,..."}),
    Flag("max_batch", ("--max-batch",), options={"type": int, "metavar": "N"}),
    Flag("input_ranges", ("--input-range",), options={"metavar": "NAME:LO:HI,..."}),
], part="shapes")

ENGINE = Group("engine", EngineSettings, [
    Flag("backend", ("--backend",)),
    Flag("threads", ("--threads",), options={"type": int, "metavar": "N"}),
    Flag("workspace_bytes", ("--workspace",), options={"type": size, "metavar": "SIZE"}),
    Flag("opt_level", ("--opt-level",), hidden=("--builder-optimization-level",),
         options={"type": int, "choices": range(6), "metavar": "0-5"}),
    Flag("tf32", ("--no-tf32",), options={"action": "store_false"},
         help="exact FP32: disable TF32 for FP32 convolutions and matrix multiplies"),
    Flag("version_compatible", ("--version-compatible",), options={"action": "store_true"}),
    Flag("hardware_compat", ("--hardware-compat",),
         options={"choices": ["none", "ampere+", "same-compute-capability"]}),
    Flag("timing_cache", ("--timing-cache",), options={"metavar": "PATH"}),
    Flag("contexts", ("--contexts",), options={"type": int, "metavar": "N"}),
], part="engine")

ACCURACY = AccuracyGroup("accuracy vs FP32", AccuracySettings, [
    Flag("data", ("--val-data",), options={"metavar": "SRC"}),
    Flag("samples", ("--accuracy-samples",), options={"type": int, "metavar": "N"}),
    Flag("budget", ("--accuracy-budget",), options={"metavar": "K=V,..."}),
    Flag("metrics", ()),  # --class-axis, --iou-threshold, --metric (see AccuracyGroup)
    Flag("accept_loss", ("--accept-accuracy-loss",), options={"action": "store_true"}),
    Flag("sensitivity", ("--sensitivity",), options={"action": "store_true"}),
], part="accuracy")

OUTPUT = Group("output and run", BuildSettings, [
    Flag("name", ("--name",)),
    Flag("engines_dir", ("--engines-dir",), options={"metavar": "DIR"}),
    Flag("batch_size", ("--batch-size",), options={"type": int, "metavar": "N"}),
    Flag("force", ("--force",), options={"action": "store_true"}),
])

PARTS: dict[str, Group] = {group.part: group for group in (CALIBRATION, QDQ, SHAPES, ENGINE, ACCURACY) if group.part}


def add_build_groups(parser: argparse.ArgumentParser, only: Mapping[str, Sequence[str]] | None = None) -> None:
    """Every group a build takes; `only` narrows a group ({"calibration": ["data", "method"]})."""
    only = only or {}
    for name, group in (*PARTS.items(), ("output", OUTPUT)):
        group.add(parser, only.get(name))


def build_settings(args: argparse.Namespace, **top: Any) -> BuildSettings:
    """BuildSettings from every group the verb added (absent flags keep their defaults); `top` sets the
    top-level fields no group parses (precision, command)."""
    parts = {name: group.parse(args) for name, group in PARTS.items()}
    return BuildSettings(**OUTPUT.values(args), **top, **parts)

