"""One self-contained HTML page: the report's tables plus matplotlib plots embedded as base64 PNGs.

No scripts, stylesheets or images are fetched, so the page can be mailed, attached to CI, or opened
offline. Plots: latency distribution per target (single-stream, or the first scenario with
samples), throughput vs batch size (offline sweep), and accuracy vs speed (top-1 agreement and SNR
against single-stream median latency).
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any

from trtopt.bench.summary import (Table, accuracy_table, comparison_table, environment_lines, latency_table,
                                  performance_table)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.regressed{background:#fdd}.improved{background:#dfd}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
"""


def _html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        status = row[-1] if row and row[-1] in ("regressed", "improved") else ""
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        body.append(f'<tr class="{status}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _latency_samples(target: dict[str, Any]) -> tuple[str, list[float]] | None:
    found = target.get("scenarios", {})
    for key in ("single_stream", "concurrency", "server"):
        if found.get(key, {}).get("samples_ms"):
            return key.replace("_", "-"), found[key]["samples_ms"]
    batches = found.get("offline", {}).get("batches", [])
    return (f"offline batch {batches[0]['batch_size']}", batches[0]["samples_ms"]) if batches else None


def _plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots = []
    targets = report["targets"]
    picked = [(t["name"], s) for t in targets if (s := _latency_samples(t))]
    if picked:
        fig, ax = plt.subplots(figsize=(9, 0.6 * len(picked) + 2.5))
        ax.boxplot([s[1] for _, s in picked], orientation="horizontal", showfliers=True, whis=(1, 99))
        ax.set_yticks(range(1, len(picked) + 1), [f"{name}\n({s[0]})" for name, s in picked])
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale; whiskers p1-p99)")
        ax.set_title("Latency distribution per target")
        plots.append(("Latency distribution", _png(fig)))
        plt.close(fig)
    sweeps = [
        (t["name"], t["scenarios"]["offline"]["batches"])
        for t in targets
        if t.get("scenarios", {}).get("offline", {}).get("batches")
    ]
    if sweeps:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for name, batches in sweeps:
            ax.plot([b["batch_size"] for b in batches], [b["throughput_sps"] for b in batches], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (samples/s)")
        ax.set_title("Throughput vs batch size (offline)")
        ax.legend()
        ax.grid(True, alpha=0.3)
        plots.append(("Throughput vs batch size", _png(fig)))
        plt.close(fig)
    speed = [(t["name"], t["scenarios"]["single_stream"]["latency_ms"]["median"], t.get("accuracy"))
             for t in targets if t.get("scenarios", {}).get("single_stream")]
    if report.get("baseline") and speed:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        for name, median, acc in speed:
            agreement = 1.0 if acc is None or acc.get("top1_agreement") is None else acc["top1_agreement"]
            snr = acc.get("snr_db") if acc else None
            left.scatter(median, 100 * agreement, s=60)
            left.annotate(name, (median, 100 * agreement), textcoords="offset points", xytext=(5, 5))
            if snr is not None:
                right.scatter(median, snr, s=60)
                right.annotate(name, (median, snr), textcoords="offset points", xytext=(5, 5))
        left.set_xlabel("single-stream median latency (ms)")
        left.set_ylabel(f"top-1 agreement with {report['baseline']} (%)")
        right.set_xlabel("single-stream median latency (ms)")
        right.set_ylabel("SNR vs baseline (dB)")
        for ax in (left, right):
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(5))
        fig.suptitle("Accuracy vs speed")
        plots.append(("Accuracy vs speed", _png(fig)))
        plt.close(fig)
    return plots


def render(report: dict[str, Any]) -> str:
    title = html.escape(report.get("label") or "trtopt benchmark")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{title}</h1><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in environment_lines(report)]
    parts += ["</ul><h2>Summary</h2>", _html_table(performance_table(report))]
    if report.get("baseline"):
        parts += [f"<h2>Accuracy vs {html.escape(report['baseline'])}</h2>", _html_table(accuracy_table(report))]
    for caption, data in _plots(report):
        parts.append(
            f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        )
    comparison = comparison_table(report)
    if comparison is not None:
        info = report["comparison"]
        unchanged = len(info["metrics"]) - len(comparison[1])
        parts += [f"<h2>Compared with run {info['against_run_id']}: {info['regressions']} regression(s), "
                  f"{info['improvements']} improvement(s)</h2>", _html_table(comparison),
                  f"<p>{unchanged} other metric(s) unchanged (the JSON report lists every one).</p>"]
    parts += ["<h2>Latency (ms)</h2>", _html_table(latency_table(report)), "</body></html>"]
    return "\n".join(parts)
