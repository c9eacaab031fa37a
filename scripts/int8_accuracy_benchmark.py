#!/usr/bin/env python3
"""INT8 accuracy on three real pretrained OCR models: trtopt vs ONNX Runtime quantize_static vs ModelOpt.

The models ship inside the ``rapidocr-onnxruntime==1.4.4`` wheel (PP-OCRv4 text detector, PP-OCRv4
text recognizer with its character list in the model's metadata, PP-OCR mobile v2 direction
classifier). The wheel is fetched once with ``pip download --no-deps`` into the cache folder
(``.cache/int8-accuracy``, git-ignored) and unzipped there; nothing is downloaded at run time
after that. Data is rendered text (Pillow with matplotlib's bundled DejaVu fonts), so every
sample has ground truth:

* detector: 320x320 pages with three lines; task metric = the standard text-detection score:
  boxes from PP-OCR's DB post-processing (``ocr_metrics.db_boxes``: binarize at 0.3, box score
  >= 0.6, unclip ratio 1.5) matched one to one to the rendered text boxes at IoU >= 0.5, hmean
  (F1) of precision and recall over all held-out pages. The extra column keeps the former metric,
  IoU of the map > 0.3 with the filled text boxes, which is biased: DB maps mark *shrunk* text
  regions, so a map that grows scores higher against the full boxes, and an INT8 model could beat
  FP32 on it while agreeing less with it. Agreement with FP32 is the IoU of the two maps > 0.3.
  300 pages by default (``--det-samples``; 60 held out), since one box is 1/180 of the score;
* recognizer: 48x320 lines; task metric = lines decoded (greedy CTC) exactly as rendered;
* classifier: 48x192 lines, half of them turned 180 degrees; task metric = orientation accuracy.

Every sample k with k % 5 == 4 is held out (trtopt's rule), the rest calibrate, for every tool.
trtopt builds for its ONNX Runtime CPU backend, whose Q/DQ encoding depends on the CPU (the note
column names it): uint8 activations over each tensor's calibrated range, and int8 weights with 8
bits where the CPU's int8 dot products sum in int32 (VNNI/AMX), 7 bits elsewhere.
Columns: FP32; ``trtopt build --int8`` with ``--calib-method entropy`` (the former default) and
``auto`` (the default now); trtopt budgeted (``--accuracy-budget`` on agreement with FP32, which
keeps the most harmful layers float); ONNX Runtime ``quantize_static`` with its defaults (QDQ,
MinMax); ModelOpt's ONNX PTQ (``python -m modelopt.onnx.quantization``, entropy and max, CPU
calibration) from a separate virtual environment the script creates in the cache folder (torch
2.13.0 CPU + nvidia-modelopt[onnx]); when it cannot run, the row says why. Per column: the task
metric, the ratio to FP32's ("budget met" = at least 99%), agreement with FP32, and speed vs FP32
(median latency of a batch of 8 held-out samples in ONNX Runtime on the CPU, same thread count, the
columns timed in turn within each round so that a shared machine's load drift hits them alike).

Usage: python scripts/int8_accuracy_benchmark.py [--samples 150] [--det-samples 300] [--threads 2]
       [--rounds 10] [--models det rec cls]
       [--modelopt-python PATH] [--skip-modelopt] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from modelopt_env import modelopt_python  # noqa: E402
from ocr_metrics import ctc_decode, db_boxes, detection_scores, text_agreement  # noqa: E402
CACHE = ROOT / ".cache" / "int8-accuracy"
WHEEL = "rapidocr-onnxruntime==1.4.4"
MODELS = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
# the in-build budget: agreement with FP32 (user metric for the recognizer), met on held-out data
BUDGETS = {
    "det": ["--accuracy-budget", "iou=0.98", "--iou-threshold", "0.3"],
    "rec": [
        "--accuracy-budget",
        "text_agreement=0.99",
        "--metric",
        f"{ROOT / 'scripts' / 'ocr_metrics.py'}:text_agreement",
    ],
    "cls": ["--accuracy-budget", "agreement=0.99"],
}
SHAPES = {"det": (3, 320, 320), "rec": (3, 48, 320), "cls": (3, 48, 192)}
WORDS = (
    "invoice total amount date paid order number customer address street city account balance due "
    "receipt item price tax shipping delivery phone email reference code station north south river "
    "market garden office bank hotel table window coffee summer winter green yellow purple silver"
).split()
MODELOPT_METHODS = ("entropy", "max")


def fetch_models() -> dict[str, Path]:
    """The three ONNX files and nothing else, from the wheel (downloaded once into the cache)."""
    target = CACHE / "models"
    paths = {key: target / name for key, name in MODELS.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("rapidocr_onnxruntime-1.4.4-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(wheels)], check=True)
    (wheel,) = wheels.glob("rapidocr_onnxruntime-1.4.4-*.whl")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for key, name in MODELS.items():
            paths[key].write_bytes(archive.read(f"rapidocr_onnxruntime/models/{name}"))
    return paths


def _fonts() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / n for n in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")]


def _line_text(rng: np.random.Generator) -> str:
    words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.4:
        words.append(str(int(rng.integers(10, 99999))))
    return " ".join(words)


def _normalize(image: np.ndarray, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    return ((image.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)


def _render_line(rng: np.random.Generator, fonts: list[Path], height: int, width: int) -> tuple[np.ndarray, str]:
    """One text line, resized to ``height`` keeping its aspect, padded (zeros after normalizing) to ``width``."""
    from PIL import Image, ImageDraw, ImageFont

    while True:
        text = _line_text(rng)
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(28, 40)))
        left, top, right, bottom = font.getbbox(text)
        w, h = right - left + 16, bottom - top + 16
        if w * height / h <= width:
            break
    background = int(rng.integers(200, 256))
    ink = int(rng.integers(0, 80))
    image = Image.new("RGB", (w, h), (background,) * 3)
    ImageDraw.Draw(image).text((8 - left, 8 - top), text, fill=(ink,) * 3, font=font)
    scaled_width = int(np.ceil(w * height / h))
    resized = np.asarray(image.resize((scaled_width, height), Image.BILINEAR))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :scaled_width] = _normalize(resized)
    return out, text


def render(model: str, count: int, seed: int = 0) -> tuple[np.ndarray, list]:
    """Inputs [count, C, H, W] and ground truth per sample (text boxes, text, or orientation)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng({"det": 1, "rec": 2, "cls": 3}[model] * 1000 + seed)
    fonts = _fonts()
    _, height, width = SHAPES[model]
    inputs, truth = [], []
    for _ in range(count):
        if model == "rec":
            x, text = _render_line(rng, fonts, height, width)
            inputs.append(x)
            truth.append(text)
        elif model == "cls":
            x, _ = _render_line(rng, fonts, height, width)
            flipped = bool(rng.random() < 0.5)
            inputs.append(x[:, ::-1, ::-1].copy() if flipped else x)
            truth.append(int(flipped))
        else:
            page = Image.new("RGB", (width, height), (int(rng.integers(210, 256)),) * 3)
            draw = ImageDraw.Draw(page)
            boxes = []
            for line in range(3):
                font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(20, 30)))
                text = _line_text(rng)
                x0, y0 = int(rng.integers(5, 60)), 15 + line * 100 + int(rng.integers(0, 40))
                box = draw.textbbox((x0, y0), text, font=font)
                draw.text((x0, y0), text, fill=(int(rng.integers(0, 80)),) * 3, font=font)
                boxes.append((max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)))
            inputs.append(_normalize(np.asarray(page)))
            truth.append(boxes)
    return np.stack(inputs), truth


def heldout_indices(count: int) -> np.ndarray:
    return np.arange(count)[np.arange(count) % 5 == 4]


def calibration_indices(count: int) -> np.ndarray:
    return np.arange(count)[np.arange(count) % 5 != 4]


def character_list(model_path: Path) -> list[str]:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    return ["<blank>", *meta["character"].splitlines(), " "]


def task_metric(model: str, outputs: np.ndarray, truth: list, characters: list[str] | None) -> float:
    """Orientation accuracy (cls), lines read exactly (rec), DB boxes' hmean at IoU 0.5 (det)."""
    if model == "cls":
        return float(np.mean(outputs.argmax(axis=-1) == np.asarray(truth)))
    if model == "rec":
        decoded = ["".join(characters[i] for i in line) for line in ctc_decode(outputs)]  # type: ignore[index]
        return float(np.mean([d.strip() == t for d, t in zip(decoded, truth)]))
    return detection_scores([db_boxes(prob) for prob in outputs[:, 0]], truth)["hmean"]


def mask_iou(outputs: np.ndarray, truth: list[list[tuple[int, int, int, int]]]) -> float:
    """The detector's former task metric: IoU of the map > 0.3 with the filled text boxes (biased, see above)."""
    ious = []
    for prob, boxes in zip(outputs[:, 0] > 0.3, truth):
        mask = np.zeros(prob.shape, bool)
        for x0, y0, x1, y1 in boxes:
            mask[y0:y1, x0:x1] = True
        ious.append((prob & mask).sum() / max((prob | mask).sum(), 1))
    return float(np.mean(ious))


def agreement(model: str, reference: np.ndarray, candidate: np.ndarray) -> float:
    """Agreement with FP32 in the issue's terms: top-1 (cls), identical decoded text (rec), mask IoU (det)."""
    if model == "cls":
        return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    if model == "rec":
        return text_agreement({"y": reference}, {"y": candidate})["text_agreement"]
    ref, cand = reference > 0.3, candidate > 0.3
    return float((ref & cand).sum() / max((ref | cand).sum(), 1))


@dataclass
class Column:
    name: str
    run: Callable[[np.ndarray], np.ndarray] | None  # held-out inputs -> the model's (single) output
    note: str = ""
    seconds: float = 0.0
    close: Callable[[], None] | None = None


def _ort_session(path: Path, threads: int, config: dict[str, str] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def trtopt_column(
    label: str, model: str, path: Path, data: Path, engines: Path, threads: int, extra: list[str]
) -> Column:
    """`trtopt build` as a user types it (a real subprocess); the engine is then loaded with trtopt.load."""
    import trtopt

    c, h, w = SHAPES[model]
    name = f"{model}-{label}"
    command = [
        sys.executable,
        "-m",
        "trtopt",
        "build",
        str(path),
        "--int8",
        "--calib-data",
        str(data),
        "--backend",
        "onnxruntime",
        "--engines-dir",
        str(engines),
        "--name",
        name,
        "--threads",
        str(threads),
        "--batch-size",
        "8",
        "--min-shapes",
        f"x:1x{c}x{h}x{w}",
        "--opt-shapes",
        f"x:8x{c}x{h}x{w}",
        "--max-shapes",
        f"x:32x{c}x{h}x{w}",
        "--force",
        "--accept-accuracy-loss",
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TRTOPT_NO_PROGRESS": "1"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return Column(label, None, "build failed: " + (done.stderr.strip().splitlines() or ["?"])[-1], seconds)
    manifest = json.loads((engines / name / "manifest.json").read_text())
    note = f"{manifest['build_options']['encoding']} encoding"
    if manifest.get("mixed_precision"):
        mixed = manifest["mixed_precision"]
        note += (
            f"; {len(mixed['kept_float'])} layer(s) float, search {mixed['evaluations']} variants "
            f"{mixed['seconds']:.0f} s"
        )
    runner = trtopt.load(engines / name, threads=threads)
    output = runner.outputs[0].name
    return Column(label, lambda x: runner.infer({"x": x})[output], note, seconds, runner.close)


def ort_static_column(path: Path, calib: np.ndarray, work: Path, threads: int) -> Column:
    """ONNX Runtime quantize_static with its defaults (QDQ, MinMax, per-tensor)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calib[i : i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out = work / f"{path.stem}.ort-static.onnx"
    started = time.perf_counter()
    try:
        quantize_static(str(path), str(out), Reader())
    except Exception as exc:  # noqa: BLE001 - a peer's failure is a result to report, not a crash
        return Column(
            "ORT quantize_static", None, f"failed: {type(exc).__name__}: {exc}", time.perf_counter() - started
        )
    return Column("ORT quantize_static", _ort_session(out, threads), "", time.perf_counter() - started)


def modelopt_column(
    method: str, python: Path | None, why: str, path: Path, calib: np.ndarray, work: Path, threads: int
) -> Column:
    label = f"ModelOpt {method}"
    if python is None:
        return Column(label, None, f"not run: {why}")
    data = work / f"{path.stem}.calib.npz"
    np.savez(data, x=calib)
    out = work / f"{path.stem}.modelopt-{method}.onnx"
    command = [
        str(python),
        "-m",
        "modelopt.onnx.quantization",
        "--onnx_path",
        str(path),
        "--quantize_mode",
        "int8",
        "--calibration_method",
        method,
        "--calibration_data_path",
        str(data),
        "--calibration_eps",
        "cpu",
        "--output_path",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not out.is_file():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return Column(label, None, f"failed (exit {done.returncode}): {(lines or ['?'])[-1][:200]}", seconds)
    return Column(label, _ort_session(out, threads), "", seconds)


def latencies_ms(
    runs: dict[str, Callable[[np.ndarray], np.ndarray]], batch: np.ndarray, rounds: int
) -> dict[str, float]:
    """Median batch latency per column, the columns timed in turn within each round.

    On a shared machine the load drifts over minutes; interleaving gives every column the same
    drift, so the ratios to FP32 stay meaningful even when the milliseconds do not.
    """
    for run in runs.values():
        run(batch)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            tic = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - tic)
    return {name: 1000 * float(np.median(values)) for name, values in times.items()}


def evaluate(model: str, path: Path, args: argparse.Namespace, work: Path, mo: tuple[Path | None, str]) -> list[dict]:
    inputs, truth = render(model, args.det_samples if model == "det" else args.samples)
    data = work / f"{model}.npz"
    np.savez(data, x=inputs)
    held, calib = heldout_indices(len(inputs)), calibration_indices(len(inputs))
    x_held, truth_held = inputs[held], [truth[i] for i in held]
    characters = character_list(path) if model == "rec" else None
    fp32 = _ort_session(path, args.threads)
    columns = [Column("FP32", fp32)]
    engines = work / "engines"
    columns.append(
        trtopt_column("trtopt entropy", model, path, data, engines, args.threads, ["--calib-method", "entropy"])
    )
    columns.append(trtopt_column("trtopt auto (default)", model, path, data, engines, args.threads, []))
    columns.append(trtopt_column("trtopt budgeted", model, path, data, engines, args.threads, BUDGETS[model]))
    columns.append(ort_static_column(path, inputs[calib], work, args.threads))
    if not args.skip_modelopt:
        for method in MODELOPT_METHODS:
            columns.append(modelopt_column(method, *mo, path, inputs[calib], work, args.threads))

    def outputs(run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.concatenate([run(x_held[i : i + 8]) for i in range(0, len(x_held), 8)])

    reference = outputs(fp32)
    fp32_metric = task_metric(model, reference, truth_held, characters)
    timed = latencies_ms({c.name: c.run for c in columns if c.run is not None}, x_held[:8], args.rounds)
    fp32_ms = timed["FP32"]
    rows = []
    for column in columns:
        row = {"model": model, "column": column.name, "note": column.note, "tool_seconds": round(column.seconds, 1)}
        if column.run is not None:
            got = outputs(column.run)
            metric = task_metric(model, got, truth_held, characters)
            ms = timed[column.name]
            row.update(
                task_metric=metric,
                vs_fp32=metric / fp32_metric if fp32_metric else None,
                agreement=agreement(model, reference, got),
                latency_ms=ms,
                speedup=fp32_ms / ms,
            )
            row["budget_met"] = bool(row["vs_fp32"] is not None and row["vs_fp32"] >= 0.99)
            if model == "det":
                boxes = detection_scores([db_boxes(prob) for prob in got[:, 0]], truth_held)
                row.update(precision=boxes["precision"], recall=boxes["recall"], mask_iou=mask_iou(got, truth_held))
        if column.close is not None:
            column.close()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    header = [
        "model",
        "column",
        "task metric",
        "vs FP32",
        ">= 99%",
        "agreement w/ FP32",
        "ms (batch 8)",
        "speedup",
        "det: mask IoU (biased)",
        "note",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if "task_metric" in r:
            cells = [
                f"{r['task_metric']:.3f}",
                f"{100 * r['vs_fp32']:.1f}%" if r["vs_fp32"] is not None else "-",
                "yes" if r["budget_met"] else "NO",
                f"{100 * r['agreement']:.1f}%",
                f"{r['latency_ms']:.1f}",
                f"{r['speedup']:.2f}x",
                f"{r['mask_iou']:.3f}" if "mask_iou" in r else "-",
            ]
        else:
            cells = ["-"] * 7
        lines.append("| " + " | ".join([r["model"], r["column"], *cells, r["note"]]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=150, help="rendered samples for rec and cls (every 5th held out)"
    )
    parser.add_argument("--det-samples", type=int, default=300, help="rendered pages for det (every 5th held out)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed runs per latency measurement")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--modelopt-python", help="a Python with nvidia-modelopt installed (default: a venv in the cache)"
    )
    parser.add_argument("--skip-modelopt", action="store_true")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    paths = fetch_models()
    work = CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)
    if args.skip_modelopt:
        mo: tuple[Path | None, str] = (None, "skipped")
    elif args.modelopt_python:
        mo = (Path(args.modelopt_python), "")
    else:
        mo = modelopt_python(CACHE / "modelopt-venv")
    rows = []
    for model in args.models:
        rows += evaluate(model, paths[model], args, work, mo)
    print()
    print(
        f"machine: {os.cpu_count()} CPUs, ONNX Runtime on the CPU, {args.threads} threads; latency = median of "
        f"{args.rounds} interleaved runs of a batch of 8 held-out samples (a shared machine: ratios mean more than ms)"
    )
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
