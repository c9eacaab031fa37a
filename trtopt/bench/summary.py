"""The tables every report format shows, computed once from the report dict.

Terminal, Markdown and HTML differ only in how they draw a table; what goes in the cells (and how
numbers are rounded) is decided here so the three never disagree.
"""
from __future__ import annotations

from typing import Any

Table = tuple[list[str], list[list[str]]]

def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def size(value: int | None) -> str:
    """Bytes in the largest binary unit that keeps the number at or above 1."""
    if value is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def best_offline(target: dict[str, Any]) -> dict[str, Any] | None:
    batches = target.get("scenarios", {}).get("offline", {}).get("batches", [])
    return max(batches, key=lambda b: b["throughput_sps"]) if batches else None


def performance_table(report: dict[str, Any]) -> Table:
    header = ["target", "backend", "precision", "size", "median ms", "p99 ms", "best sps (batch)",
              "server qps / p99 ms", "concurrency sps", "RSS +", "stop"]
    rows = []
    for t in report["targets"]:
        found = t.get("scenarios", {})
        single = found.get("single_stream")
        offline = best_offline(t)
        server = found.get("server")
        conc = found.get("concurrency")
        stops = {
            s["stability"]["stop_reason"] for s in [single, conc, *found.get("offline", {}).get("batches", [])] if s
        }
        rows.append(
            [
                t["name"],
                t["backend"],
                t["precision"],
                size(t.get("engine_size_bytes")),
                fmt(single["latency_ms"]["median"]) if single else "-",
                fmt(single["latency_ms"]["p99"]) if single else "-",
                f"{fmt(offline['throughput_sps'])} ({offline['batch_size']})" if offline else "-",
                f"{fmt(server['achieved_qps'])}/{fmt(server['target_qps'])} / {fmt(server['latency_ms']['p99'])}"
                if server
                else "-",
                fmt(conc["throughput_sps"]) if conc else "-",
                size(t["memory"]["host_rss_delta_bytes"]),
                ",".join(sorted(stops)) or "-",
            ]
        )
    return header, rows


def accuracy_table(report: dict[str, Any]) -> Table:
    header = ["target", "top-1 agreement", "task accuracy", "max abs err", "cosine", "SNR dB"]
    rows = []
    for t in report["targets"]:
        acc = t.get("accuracy") or {}
        is_baseline = t["name"] == report.get("baseline")
        rows.append(
            [
                t["name"] + (" (baseline)" if is_baseline else ""),
                fmt(acc.get("top1_agreement"), 4),
                fmt(t.get("task_accuracy"), 4),
                fmt(acc.get("max_abs_error")),
                fmt(acc.get("cosine_similarity"), 6),
                ("inf" if acc and acc.get("snr_db") is None else fmt(acc.get("snr_db"), 4)),
            ]
        )
    return header, rows


def latency_table(report: dict[str, Any]) -> Table:
    header = [
        "target",
        "scenario",
        "batch",
        "min",
        "mean",
        "median",
        "p90",
        "p95",
        "p99",
        "stdev",
        "throughput sps",
        "iterations",
        "stop",
    ]
    rows = []
    for t in report["targets"]:
        found = t.get("scenarios", {})
        runs = [("single-stream", found.get("single_stream"))]
        runs += [("offline", b) for b in found.get("offline", {}).get("batches", [])]
        runs += [("concurrency", found.get("concurrency")), ("server", found.get("server"))]
        for scenario, result in runs:
            if not result:
                continue
            lat = result["latency_ms"]
            throughput = result.get("throughput_sps", result.get("achieved_qps"))
            stop = result["stability"]["stop_reason"] if "stability" in result else "fixed duration"
            rows.append([t["name"], scenario, fmt(result.get("batch_size", 1)),
                         *(fmt(lat[k]) for k in ("min", "mean", "median", "p90", "p95", "p99", "stdev")),
                         fmt(throughput), fmt(result.get("iterations", result.get("completed"))), stop])
    return header, rows


def comparison_table(report: dict[str, Any], only_moved: bool = True) -> Table | None:
    comparison = report.get("comparison")
    if not comparison:
        return None
    header = ["metric", "before", "now", "change", "status"]
    rows = [[r["key"], fmt(r["old"], 4), fmt(r["new"], 4),
             "-" if r["change"] is None else f"{100 * r['change']:+.1f}%", r["status"]]
            for r in comparison["metrics"] if not only_moved or r["status"] != "unchanged"]
    return header, rows


def environment_lines(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    return [
        f"run {report.get('run_id') or '-'} at {report['created_at']} on {env['hostname']} ({env['os']})",
        f"CPU: {env['cpu']} x{env['cpu_count']}; GPU: {', '.join(env['gpus']) or 'none'}; threads: "
        f"{env['threads'] or 'library default'}",
        f"trtopt {env['trtopt_version']} (git {env['git_revision'] or 'unknown'}); Python {env['python']}; {libs}",
        f"inputs: {report['inputs']['samples']} samples, {report['inputs']['origin']}; baseline: "
        f"{report.get('baseline') or 'none'}",
    ]
