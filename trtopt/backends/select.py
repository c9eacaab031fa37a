"""``--backend auto|NAME``: which backend runs here, and why.

``auto`` walks :data:`trtopt.backends.registry.AUTO_ORDER` and takes the first backend whose own
``availability()`` says yes; the last entry (ONNX Runtime on the CPU) always can. When it falls back
it says in one line why the preferred backend was not usable (the backend's own reason), so a user
who expected a GPU build learns why they did not get one. An explicit name is validated up front:
an unknown name is a usage error, a known but unusable backend a failure with its reason (instead
of a crash deep inside a build).
"""
from __future__ import annotations

from trtopt.backends.registry import AUTO_ORDER, BACKEND_MODULES, get_backend
from trtopt.errors import TrtoptError, UsageError


def select_backend(requested: str) -> tuple[str, str]:
    """Resolve ``requested`` ("auto" or a backend name) to (backend name, one-line reason)."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return _auto()
    if requested not in BACKEND_MODULES:
        raise UsageError(f"--backend {requested!r} is unknown; choose auto or one of {sorted(BACKEND_MODULES)}")
    usable, why = get_backend(requested).availability()
    if not usable:
        raise TrtoptError(f"--backend {requested} cannot run here: {why}")
    return requested, f"{requested}: requested explicitly"


def _auto() -> tuple[str, str]:
    skipped: list[str] = []
    for name in AUTO_ORDER:
        backend = get_backend(name)
        usable, why = backend.availability()
        if usable and not skipped:
            return name, f"auto: {why}"
        if usable:
            return name, f"auto: not using {'; '.join(skipped)}; falling back to {backend.title}"
        skipped.append(f"{backend.title} because {why}")
    raise TrtoptError("auto: no backend can run here: " + "; ".join(skipped))
