#!/usr/bin/env python3
"""Render a `trtopt bench --html` report in headless Chromium, save a screenshot, check the plots show.

The report embeds its plots as base64 PNGs; a broken data URI or a page that fails to render shows
up as a screenshot without plot colours. This script counts pixels in matplotlib's first two
default colours (the plotted series) in the screenshot and fails when there are too few.

Usage: scripts/check_html_report.py REPORT.html --screenshot OUT.png [--chromium PATH]
Exit status: 0 plots visible, 1 rendered without visible plots, 2 usage error (no file, no Chromium).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# matplotlib's default cycle starts with these (tab:blue, tab:orange)
_PLOT_COLOURS = np.array([[0x1F, 0x77, 0xB4], [0xFF, 0x7F, 0x0E]], dtype=np.float64) / 255.0
_MIN_PLOT_PIXELS = 200
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    return next((found for name in _CANDIDATES if (found := shutil.which(name))), None)


def screenshot(chromium: str, page: Path, out: Path, width: int, height: int, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="trtopt-chromium-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
                   page.resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def plot_pixels(png: Path) -> int:
    """Pixels within a small distance of a matplotlib series colour."""
    import matplotlib.image

    image = matplotlib.image.imread(str(png))[..., :3].astype(np.float64)
    distances = np.linalg.norm(image[..., None, :] - _PLOT_COLOURS, axis=-1)
    return int((distances.min(axis=-1) < 0.12).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write")
    parser.add_argument("--chromium", help="browser binary (default: first of chromium, google-chrome on PATH)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3200)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"check_html_report: error: report not found: {args.report}", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_html_report: error: no Chromium found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        screenshot(chromium, args.report, args.screenshot, args.width, args.height, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"check_html_report: error: {exc}", file=sys.stderr)
        return 1
    pixels = plot_pixels(args.screenshot)
    print(f"screenshot {args.screenshot}: {pixels} plot-coloured pixels")
    if pixels < _MIN_PLOT_PIXELS:
        print(
            f"check_html_report: plots not visible (fewer than {_MIN_PLOT_PIXELS} plot-coloured pixels)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
