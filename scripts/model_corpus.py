#!/usr/bin/env python3
"""Model corpus benchmark: FP32, FP16 and INT8 builds of ONNX models nobody here wrote, then load and infer.

For every member of scripts/corpus_models.py and every precision: ``trtopt.pipeline.build`` on the
ONNX Runtime backend (accuracy vs FP32 measured by the build on held-out data), then
``trtopt.load(engine).infer(heldout)`` on a feed the build never saw, compared with the FP32
engine's outputs on the same feed. One row per model and precision:

* status: ``ok`` when built and loaded and the held-out outputs are finite (``ok, far off FP32`` when
  the build itself flagged the engine as far off FP32: the accuracy is the finding; ``ok, mostly
  float`` when the build warned that INT8 covers under half of the compute), else the error;
* build s: wall time of the build (calibration, conversion, ONNX Runtime optimization, accuracy check);
* acc vs FP32: the build's worst-output cosine similarity and, where the model has class outputs,
  top-1 agreement, both from the build's held-out check; then the held-out feed's worst cosine;
* speed vs FP32: FP32 median latency / this engine's, timing ``infer`` on the held-out feed.

Exit status 1 when any row fails. Timings are whatever this machine gives (say which when quoting).

Usage: python scripts/model_corpus.py [--only NAME ...] [--threads N] [--classic-samples N] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.errors import first_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_models import CorpusModel, corpus  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")


def median_ms(runner: Any, feed: dict[str, np.ndarray], repeats: int = 10) -> float:
    runner.infer(feed)  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        runner.infer(feed)
        times.append(time.perf_counter() - tic)
    return 1000 * float(np.median(times))


def worst_cosine(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    worst = 1.0
    for name, ref in reference.items():
        a = np.asarray(ref, np.float64).ravel()
        b = np.asarray(candidate[name], np.float64).ravel()
        if not np.isfinite(b).all():
            return float("nan")
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        worst = min(worst, 1.0 if norm == 0 and not a.any() and not b.any() else float(a @ b / norm) if norm else 0.0)
    return worst


def run_member(member: CorpusModel, engines: Path, threads: int) -> list[dict[str, Any]]:
    import trtopt
    from trtopt.pipeline import build

    rows, reference, fp32_ms = [], None, None
    for precision in PRECISIONS:
        row: dict[str, Any] = {"model": member.name, "kind": member.kind, "precision": precision}
        try:
            tic = time.perf_counter()
            result = build(member.path, precision=precision, engines_dir=engines, name=f"{member.name}-{precision}",
                           backend="onnxruntime", threads=threads, force=True, **member.settings)
            row["build_s"] = time.perf_counter() - tic
            accuracy = result.accuracy or {}
            row["cosine"] = accuracy.get("cosine_similarity")
            row["agreement"] = accuracy.get("top1_agreement")
            with trtopt.load(result.engine_dir) as runner:
                outputs = runner.infer(member.heldout)
                ms = median_ms(runner, member.heldout)
            if precision == "fp32":
                reference, fp32_ms = outputs, ms
            row["heldout_cosine"] = worst_cosine(reference, outputs) if reference is not None else None
            row["speed"] = fp32_ms / ms if fp32_ms else None
            model = result.manifest["model"]
            row["model_info"] = {k: model[k] for k in ("quantized_activations", "quantized_weights") if k in model}
            coverage = model.get("int8_coverage") or {}
            if coverage:
                row["model_info"]["int8_layers"] = f"{coverage['quantized_layers']}/{coverage['weighted_layers']}"
                if coverage["compute_share"] is not None:
                    row["model_info"]["int8_compute"] = f"{100 * coverage['compute_share']:.0f}%"
            if precision == "fp16":
                row["model_info"] = {"kept_fp32": len(model.get("kept_fp32") or {})}
            bad = row["heldout_cosine"] is not None and not np.isfinite(row["heldout_cosine"])
            far_off = accuracy.get("far_off")  # the build's own verdict (NaN/Inf, SNR < 10 dB, agreement/IoU low)
            row["status"] = ("FAIL: non-finite held-out outputs" if bad else "ok, far off FP32" if far_off
                             else "ok, mostly float" if coverage.get("warning") else "ok")  # the build's verdicts
        except Exception as exc:  # noqa: BLE001 - a row reports its failure; the run goes on
            row["status"] = f"FAIL: {type(exc).__name__}: {first_line(exc, '')[:160]}"
            row["traceback"] = traceback.format_exc()
        rows.append(row)
    return rows


def cell(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | precision | status | build s | cosine (build) | top-1 agr. (build) | cosine (held-out load) "
             "| speed vs FP32 | converted |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        info = ", ".join(f"{k} {v}" for k, v in (r.get("model_info") or {}).items())
        agreement = r.get("agreement")
        lines.append(f"| {r['model']} | {r['precision']} | {r['status']} | {cell(r.get('build_s'), '.1f')} | "
                     f"{cell(r.get('cosine'), '.5f')} | "
                     f"{cell(100 * agreement if agreement is not None else None, '.1f')}"
                     f"{'%' if agreement is not None else ''} | {cell(r.get('heldout_cosine'), '.5f')} | "
                     f"{cell(r.get('speed'), '.2f')}{'x' if r.get('speed') else ''} | {info or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model names (prefix match) to run")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    parser.add_argument("--classic-samples", type=int, default=8,
                        help="calibration and accuracy samples for the nine classic 224x224 models (default 8)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    from trtopt.progress import set_quiet

    set_quiet(True)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trtopt-corpus-") as folder:
        for factory in corpus(args.classic_samples):
            member = factory()
            if args.only and not any(member.name.startswith(p) for p in args.only):
                continue
            print(f"{member.name}: {member.kind}", file=sys.stderr, flush=True)
            rows += run_member(member, Path(folder), args.threads)
    models = len({r["model"] for r in rows})
    failed = [r for r in rows if not r["status"].startswith("ok")]
    print(table(rows))
    print(f"\n{models} models, {len(rows)} builds, {len(rows) - len(failed)} built and loaded, {len(failed)} failed; "
          f"{time.perf_counter() - started:.0f} s with {args.threads} ONNX Runtime threads (ONNX Runtime on the CPU)")
    for r in failed:
        print(f"\n{r['model']} {r['precision']}:\n{r.get('traceback', r['status'])}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "traceback"} for r in rows],
                                              indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
