"""HTML page for a per-layer INT8 sensitivity result (`trtopt sensitivity --html`, `build --sensitivity`).

Self-contained and styled like the benchmark report: a bar plot of each layer's harm (INT8 alone) and gain
(float alone), most harmful first, and the ranked table with ONNX node names.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from trtopt.bench.report_html import _STYLE, _html_table, _png
from trtopt.fileio import atomic_write_bytes

PLOTTED_LAYERS = 30


def _snr(accuracy: dict[str, Any]) -> str:
    value = accuracy.get("snr_db")
    return "inf" if value is None else f"{value:.1f}"


def _agreement(accuracy: dict[str, Any]) -> str:
    value = accuracy.get("top1_agreement")
    return "-" if value is None else f"{100 * value:.2f}%"


def sensitivity_html(result: dict[str, Any], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    shown = layers[:PLOTTED_LAYERS]
    figure, axis = plt.subplots(figsize=(10, 0.3 * len(shown) + 1.5))
    names = [entry["node"] for entry in shown][::-1]
    axis.barh(names, [entry["harm"] for entry in shown][::-1], label="harm: noise/signal with only this layer INT8")
    axis.barh(
        names,
        [entry["gain"] for entry in shown][::-1],
        alpha=0.6,
        label="gain: noise/signal removed by keeping it float",
    )
    axis.set_xscale("symlog", linthresh=1e-4)
    axis.set_xlabel("noise-to-signal power, summed over outputs")
    axis.legend(loc="lower right")
    header = ["rank", "node", "op", "INT8 alone: SNR dB", "agreement", "float alone: SNR dB", "agreement"]
    rows = [
        [
            str(rank),
            entry["node"],
            entry["op_type"],
            _snr(entry["int8_alone"]["accuracy"]),
            _agreement(entry["int8_alone"]["accuracy"]),
            _snr(entry["float_alone"]["accuracy"]),
            _agreement(entry["float_alone"]["accuracy"]),
        ]
        for rank, entry in enumerate(layers, 1)
    ]
    image = _png(figure)
    plt.close(figure)
    summary = (
        f"{len(layers)} quantized layers, {result['samples']} held-out samples, {result['evaluations']} variants "
        f"in {result['seconds']:.1f} s; all INT8: SNR {_snr(result['all_int8']['accuracy'])} dB"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
        f"<img alt='per-layer sensitivity' src='data:image/png;base64,{image}'>"
        f"{_html_table((header, rows))}</body></html>"
    )


def write_sensitivity_html(result: dict[str, Any], path: str | os.PathLike[str], title: str) -> Path:
    return atomic_write_bytes(path, sensitivity_html(result, title).encode())
