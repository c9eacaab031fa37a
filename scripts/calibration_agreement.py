#!/usr/bin/env python3
"""One-pass calibration against the exact two-pass result: per model, per method, how many tensors agree.

The exact reference is calibration as it used to work: a full pass for each tensor's max |x|, then
a second pass binning every value over the now known ``[0, max |x|]``. trtopt's one pass
(:func:`trtopt.quantization.collect.collect`) runs on the same data. For every calibrated tensor
and every method (max, percentile 99.99, MSE, entropy, auto) the kept-bin count of both
histograms is compared; "agrees" means within one 2048-bin width.

Because the entropy (KL) search has near-ties between distant candidates, the script also runs
the exact two-pass reference on the same data less its last batch and counts how often *that*
entropy pick agrees with the full one: the pick's own sensitivity to the sample set, the scale
against which the one-pass differences are read (``exact-subset`` column).

Models: trtopt's zoo (a LeNet trained on the bundled digits, a MobileNetV2 and a ResNet-18 with
random weights), the nine classic zoo architectures the ``onnx`` package ships (random weights,
image-like inputs) and two Transformer encoders (PyTorch's ``TransformerEncoder`` on float
tokens; a BERT-style encoder on int64 token ids with a mask). Whole run: a few minutes on two cores.

Usage: python scripts/calibration_agreement.py [--only NAME ...] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trtopt.data.sources import DataSource, open_source  # noqa: E402
from trtopt.quantization.calibrate import kept_bins as calibrated_bins  # noqa: E402
from trtopt.quantization.collect import collect  # noqa: E402
from trtopt.quantization.histogram import AbsHistogram, RangeStats  # noqa: E402
from trtopt.quantization.session import TargetRunner  # noqa: E402

METHODS = ("max", "percentile", "mse", "entropy", "auto")
PERCENTILE = 99.99


@dataclass(frozen=True)
class AgreementModel:
    """A model and the data it is calibrated on (a spec for ``open_source`` plus its options)."""

    name: str
    path: Path
    data: str
    batch_size: int
    samples: int
    options: dict[str, Any] = field(default_factory=dict)


def exact_two_pass(runner: TargetRunner, data: DataSource) -> dict[str, AbsHistogram]:
    """The reference: ranges first, then every value binned over the known range."""
    ranges = {name: RangeStats() for name in runner.targets}
    for batch in data:
        for name, values in runner.infer(batch.feed).items():
            ranges[name].update(values, False, name)
    hists = {name: AbsHistogram(stats.absmax) for name, stats in ranges.items()}
    for batch in data:
        for name, values in runner.infer(batch.feed).items():
            hists[name].update(values)
    return hists


def kept_bins(hist: AbsHistogram, method: str) -> int:
    """The number of kept bins ``method`` picks on ``hist`` (amax = that many bin widths)."""
    if method == "max" or hist.nonzero_counts().sum() == 0:
        return hist.bins
    return calibrated_bins(hist, method, PERCENTILE)[0]


def agreement(one_pass: dict[str, AbsHistogram], exact: dict[str, AbsHistogram], method: str) -> list[str]:
    """The tensors whose ``method`` pick differs by more than one bin (tensors that are all zero skipped)."""
    return [name for name, reference in exact.items()
            if reference.range_max > 0 and abs(kept_bins(one_pass[name], method) - kept_bins(reference, method)) > 1]


def measure(model: AgreementModel) -> dict[str, Any]:
    """One-pass vs exact two-pass agreement per method, and the entropy pick on the data less one batch."""
    import onnx

    from trtopt.quantization.providers import select_providers

    runner = TargetRunner(model.path, onnx.load(model.path, load_external_data=False), select_providers("cpu"))
    try:
        def source(samples: int) -> DataSource:
            return open_source(model.data, runner.inputs, batch_size=model.batch_size, max_samples=samples,
                               **model.options)

        data = source(model.samples)
        start = time.perf_counter()
        exact = exact_two_pass(runner, data)
        subset = exact_two_pass(runner, source(model.samples - model.batch_size))
        one_pass = collect(runner, data, histograms=True).histograms
    finally:
        runner.close()
    assert one_pass is not None
    tensors = sum(hist.range_max > 0 for hist in exact.values())
    row: dict[str, Any] = {"model": model.name, "tensors": tensors, "samples": model.samples,
                           "seconds": round(time.perf_counter() - start, 1)}
    for method in METHODS:
        differing = agreement(one_pass, exact, method)
        row[method] = tensors - len(differing)
        row[f"{method}_differing"] = differing
    row["exact-subset"] = tensors - len(agreement(subset, exact, "entropy"))
    return row


def _images(folder: Path, shape: tuple[int, ...], count: int, name: str) -> str:
    """Smooth, image-like inputs (low-resolution noise upsampled), so activations are not white noise."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(-2, 2, (count, *shape[:-2], shape[-2] // 8, shape[-1] // 8)).astype(np.float32)
    np.savez(folder / "data.npz", **{name: coarse.repeat(8, axis=-2).repeat(8, axis=-1)})
    return str(folder / "data.npz")


def classic(folder: Path, name: str, samples: int = 8) -> AgreementModel:
    """A classic zoo architecture from the ``onnx`` package (IR 3: initializers are graph inputs too)."""
    import onnx

    import corpus_models

    path = corpus_models.classic_path(name)
    graph = onnx.load(path).graph
    constants = {init.name for init in graph.initializer} | {node.output[0] for node in graph.node}
    data_input = next(i for i in graph.input if i.name not in constants)
    shape = tuple(d.dim_value for d in data_input.type.tensor_type.shape.dim)
    return AgreementModel(f"classic-{name}", path, _images(folder, shape[1:], samples, data_input.name), 1, samples)


def _exported(folder: Path, module: Any, example: Any, name: str) -> Path:
    from trtopt.export import MIN_OPSET, _export_bytes

    data, _ = _export_bytes(module, example, MIN_OPSET, True, "auto")
    (folder / name).write_bytes(data)
    return folder / name


def zoo(folder: Path, name: str, size: int, samples: int = 24, **config: Any) -> AgreementModel:
    """A zoo architecture with random weights at ``size`` x ``size``, exported by trtopt."""
    import torch

    from trtopt.models import create_model

    torch.manual_seed(0)
    model = create_model(name, input_size=size, num_classes=10, **config).eval()
    path = _exported(folder, model, torch.randn(2, 3, size, size), f"{name}.onnx")
    return AgreementModel(f"zoo-{name}", path, _images(folder, (3, size, size), samples, "input"), 8, samples)


def zoo_lenet(folder: Path) -> AgreementModel:
    import corpus_models

    return AgreementModel("zoo-lenet-trained", corpus_models.zoo_lenet().path, "digits", 8, 64)


def torch_encoder(folder: Path, samples: int = 24) -> AgreementModel:
    """PyTorch's own ``TransformerEncoder`` (two layers) on float tokens."""
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    path = _exported(folder, encoder, torch.randn(2, 16, 32), "encoder.onnx")
    tokens = np.random.default_rng(1).standard_normal((samples, 16, 32)).astype(np.float32)
    np.savez(folder / "tokens.npz", input=tokens)
    return AgreementModel("transformer-encoder", path, str(folder / "tokens.npz"), 8, samples)


def bert_encoder(folder: Path) -> AgreementModel:
    """The corpus's BERT-style encoder: int64 token ids and attention mask, random ids."""
    import corpus_models
    from trtopt.data.sources.synthetic import parse_input_ranges

    member = corpus_models.encoder()
    ranges = parse_input_ranges(member.settings["input_ranges"])
    return AgreementModel("bert-encoder", member.path, "random", 8, 64, {"ranges": ranges})


MODELS: dict[str, Callable[[Path], AgreementModel]] = {
    "zoo-lenet-trained": zoo_lenet,
    "zoo-mobilenetv2": lambda folder: zoo(folder, "mobilenetv2", 32, width_mult=0.5),
    "zoo-resnet18": lambda folder: zoo(folder, "resnet18", 64),
    **{f"classic-{name}": lambda folder, name=name: classic(folder, name) for name in (
        "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
        "vgg19", "zfnet512")},
    "transformer-encoder": torch_encoder,
    "bert-encoder": bert_encoder,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(MODELS), help="models to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows (with the differing tensors) here")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'model':28s} {'tensors':>7s} " + " ".join(f"{m:>10s}" for m in METHODS) + f" {'exact-subset':>12s}")
    for name in args.only or list(MODELS):
        with tempfile.TemporaryDirectory() as folder:
            row = measure(MODELS[name](Path(folder)))
        rows.append(row)
        print(f"{name:28s} {row['tensors']:7d} " + " ".join(f"{row[m]:10d}" for m in METHODS)
              + f" {row['exact-subset']:12d}   ({row['seconds']} s)", flush=True)
    total = sum(row["tensors"] for row in rows)
    print(f"{'all':28s} {total:7d} " + " ".join(f"{sum(row[m] for row in rows):10d}" for m in METHODS)
          + f" {sum(row['exact-subset'] for row in rows):12d}")
    for row in rows:
        for method in METHODS:
            if row[f"{method}_differing"]:
                print(f"  {row['model']} {method}: {', '.join(row[f'{method}_differing'])}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
