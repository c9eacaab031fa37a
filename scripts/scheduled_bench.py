#!/usr/bin/env python3
"""Scheduled benchmark run: `scripts/scheduled_bench.py SUITE.toml [--history PATH] [--compare-to last|RUN_ID]`.

Builds what is missing, benchmarks the suite's models x precisions x backends, writes the reports
and the history, and exits like `trtopt bench`: 0 ok, 1 failure, 2 usage error (bad suite file),
3 regression against the previous run. Meant for cron or a systemd timer (docs/BENCH.md).
"""
from __future__ import annotations

import sys

from trtopt.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print("usage: scheduled_bench.py SUITE.toml [trtopt bench options such as --history PATH]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(["-q", "bench", "--suite", sys.argv[1], *sys.argv[2:]]))
