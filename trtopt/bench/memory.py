"""Host memory attributed to one target: peak RSS while it is loaded and run, minus RSS before.

Targets run one after another in the same process, so the process-wide peak would charge every
target with the largest one's memory. On Linux the kernel's high-water mark (VmHWM) can be reset
by writing "5" to /proc/self/clear_refs; we reset it before loading a target and read it after
closing the target's runners. Where that is not possible, a sampling thread polls RSS instead
(it can miss spikes shorter than its period; the report says which method was used).
"""
from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

import psutil

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_SAMPLE_PERIOD_S = 0.002


def _read_hwm() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _read_hwm() is not None


class PeakRss:
    """Context manager: ``peak_bytes`` and ``delta_bytes`` of host RSS over its body."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self.method = ""
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def delta_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_PERIOD_S):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self.baseline_bytes = self._process.memory_info().rss
        self.peak_bytes = self.baseline_bytes
        if _reset_hwm():
            self.method = "vmhwm"
        else:
            self.method = "sampled"
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
        hwm = _read_hwm() if self.method == "vmhwm" else None
        self.peak_bytes = max(self.peak_bytes, hwm or 0, self._process.memory_info().rss)
