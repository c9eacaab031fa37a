"""Version parsing and the rules that decide whether an engine may run here.

A TensorRT engine is tied to the TensorRT version and the GPU it was built on, unless it was built
version-compatible (runs on the same or a later TensorRT, see :func:`version_mismatch`) or
hardware-compatible (Ampere+ or same compute capability). TensorRT itself only fails to deserialize,
or worse, runs slowly with a warning; the manifest records both sides so ``load()`` can refuse early
with a message that says how to rebuild. Pure functions: the CPU test suite covers every rule.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from trtopt.errors import TrtoptError, UsageError

# BuildOptions.hardware_compat spelling -> trt.HardwareCompatibilityLevel member name
HARDWARE_COMPAT_LEVELS = {
    "none": "NONE",
    "ampere+": "AMPERE_PLUS",
    "same-compute-capability": "SAME_COMPUTE_CAPABILITY",
}


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.9.0.34"`` -> ``(10, 9, 0, 34)``; raises UsageError on anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)*)(?:[.+-]?[A-Za-z].*)?\s*", str(text))
    if not match:
        raise UsageError(f"cannot parse TensorRT version {text!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def major(version: str) -> int:
    return parse_version(version)[0]


def needs_strongly_typed_flag(version: str) -> bool:
    """10.x needs NetworkDefinitionCreationFlag.STRONGLY_TYPED; 11.x is always strongly typed
    (the flag is deprecated and ignored there, so we do not pass it)."""
    return major(version) < 11


def inspector_io_key(version: str) -> str:
    """Key of the engine inspector JSON that lists I/O tensors: "Bindings" before 11, "I/O Tensors" after."""
    return "Bindings" if major(version) < 11 else "I/O Tensors"


def parse_compute_capability(text: str) -> tuple[int, int]:
    """``"8.6"`` -> ``(8, 6)``."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"cannot parse compute capability {text!r} (expected e.g. 8.6)")
    return int(match.group(1)), int(match.group(2))


def hardware_compat_level(spelling: str) -> str:
    """Map ``--hardware-compat`` to the HardwareCompatibilityLevel member name."""
    level = HARDWARE_COMPAT_LEVELS.get(spelling.strip().lower())
    if level is None:
        raise UsageError(f"--hardware-compat {spelling!r}: expected one of {sorted(HARDWARE_COMPAT_LEVELS)}")
    return level


# Ampere's compute capability: the floor of the ampere+ hardware-compatibility level, to build and to run
AMPERE = (8, 0)


def check_build_options(hardware_compat: str, compute_capability: str) -> None:
    """Refuse option combinations TensorRT would reject later, before a long build."""
    level = hardware_compat_level(hardware_compat)
    if level == "AMPERE_PLUS" and parse_compute_capability(compute_capability) < AMPERE:
        raise UsageError(
            "--hardware-compat ampere+ needs an Ampere or newer GPU to build on; this GPU is compute capability "
            f"{compute_capability}"
        )


# Majors whose version-compatible engines a later major runs: NVIDIA's support matrix (11.4.1,
# "Engine Portability") lists exactly two cross-major combinations, TensorRT 8 engines on a 10
# runtime and TensorRT 10 engines on an 11 runtime; the engine-compatibility page of the 11.1
# developer guide gives the same example ("engines built with TensorRT 10 work with TensorRT 11").
CROSS_MAJOR_RUNTIMES = {8: 10, 10: 11}
# Version compatibility exists since 8.6: older plans and runtimes never take part.
FIRST_VERSION_COMPATIBLE = (8, 6)


def version_compatible_runs(built: tuple[int, ...], runtime: tuple[int, ...]) -> bool:
    """True when a version-compatible plan built with `built` runs on TensorRT `runtime`."""
    if built[:2] < FIRST_VERSION_COMPATIBLE or runtime[:2] < FIRST_VERSION_COMPATIBLE:
        return False
    if built[0] == runtime[0]:
        return runtime[:3] >= built[:3]  # same major: the same or a later release
    return CROSS_MAJOR_RUNTIMES.get(built[0]) == runtime[0]


def version_mismatch(built: str, runtime: str, version_compatible: bool) -> str | None:
    """Why an engine built with TensorRT `built` cannot run on `runtime`, or None if it can.

    Default engines need the same major.minor.patch. Version-compatible engines follow NVIDIA's
    rule (:func:`version_compatible_runs`): the same or a later release of the same major, and
    across majors only the documented pairs (10 -> 11, 8 -> 10); never an older runtime.
    """
    b, r = parse_version(built), parse_version(runtime)
    if version_compatible:
        if version_compatible_runs(b, r):
            return None
        if r[:3] < b[:3]:
            return f"it was built with TensorRT {built}, newer than this TensorRT {runtime}"
        return (f"it was built version-compatible with TensorRT {built}, and TensorRT {runtime} does not run "
                f"such engines (NVIDIA supports later {b[0]}.x releases"
                + (f" and TensorRT {CROSS_MAJOR_RUNTIMES[b[0]]}" if b[0] in CROSS_MAJOR_RUNTIMES else "") + ")")
    if b[:3] != r[:3]:
        return f"it was built with TensorRT {built} and this is TensorRT {runtime} (not built version-compatible)"
    return None


def has_device_memory_size_v2(version: str) -> bool:
    """``ICudaEngine.device_memory_size_v2`` exists from TensorRT 10.1 (the 10.0 C++ API lists only
    getDeviceMemorySize; 10.1 adds getDeviceMemorySizeV2); TensorRT 11 removed the old name."""
    return parse_version(version)[:2] >= (10, 1)


def engine_device_memory_bytes(engine: Any, version: str) -> int:
    """Device memory one execution context needs, by the attribute this TensorRT has."""
    if has_device_memory_size_v2(version):
        return int(engine.device_memory_size_v2)
    # TensorRT 10.x compatibility: 10.0 has only device_memory_size (the _v2 name arrived in 10.1)
    return int(engine.device_memory_size)


def pool_device_memory_bytes(engine: Any | None, version: str, contexts: int) -> int:
    """Device memory a runner's `contexts` execution contexts hold; 0 once close() released the engine
    (None), so the question has an answer for a closed runner as for every other runner."""
    return 0 if engine is None else engine_device_memory_bytes(engine, version) * contexts


def device_mismatch(built: Mapping[str, Any], here: Mapping[str, Any], hardware_compat: str) -> str | None:
    """Why an engine built on device `built` cannot run on device `here`, or None if it can.

    ``none``: same GPU model (TensorRT tunes tactics per model; another model of the same compute
    capability may fail or run slowly). ``same-compute-capability``: equal compute capability.
    ``ampere+``: any GPU of compute capability 8.0 or newer.
    """
    level = hardware_compat_level(hardware_compat)
    cc_built = parse_compute_capability(built["compute_capability"])
    cc_here = parse_compute_capability(here["compute_capability"])
    where = f"{here.get('name', '?')} (compute capability {here['compute_capability']})"
    origin = f"{built.get('name', '?')} (compute capability {built['compute_capability']})"
    if level == "AMPERE_PLUS":
        if cc_here >= AMPERE:
            return None
        return f"it is hardware-compatible with Ampere and newer only, and this GPU is {where}"
    if cc_built != cc_here:
        return f"it was built for {origin} and this GPU is {where}"
    if level == "NONE" and built.get("name") != here.get("name"):
        return f"it was built on {origin} and this GPU is {where} (not built hardware-compatible)"
    return None


def engine_record(
    version: str, device: Mapping[str, Any], version_compatible: bool, hardware_compat: str
) -> dict[str, Any]:
    """The ``"tensorrt"`` manifest section a build writes and :func:`check_engine_compatible` reads.

    Kept in a section of its own so the rule does not depend on how the repository lays out the
    rest of the manifest (it also records backend version and device at the top level).
    """
    return {"version": version, "device": dict(device), "version_compatible": bool(version_compatible),
            "hardware_compat": hardware_compat}


def engine_incompatibilities(manifest: Mapping[str, Any], runtime_version: str, device: Mapping[str, Any]) -> list[str]:
    """Why the engine in `manifest` cannot run with TensorRT `runtime_version` on `device` (empty: it can)."""
    record = manifest.get("tensorrt") or {}
    built_device = record.get("device") or {}
    if not record.get("version") or "compute_capability" not in built_device:
        return ["the engine manifest lacks the TensorRT version or GPU it was built for"]
    reasons = [
        version_mismatch(str(record["version"]), runtime_version, bool(record.get("version_compatible"))),
        device_mismatch(built_device, device, str(record.get("hardware_compat") or "none")),
    ]
    return [r for r in reasons if r]


def check_engine_compatible(manifest: Mapping[str, Any], runtime_version: str, device: Mapping[str, Any]) -> None:
    """Raise TrtoptError, with how to rebuild, when the engine in `manifest` cannot run here."""
    reasons = engine_incompatibilities(manifest, runtime_version, device)
    if reasons:
        name = manifest.get("name")
        label = f"engine {name!r}" if name else "this engine"
        raise TrtoptError(
            f"cannot run {label}: " + "; ".join(reasons)
            + ". Rebuild it on this machine: rerun its `trtopt build ... --backend tensorrt` command here"
            " (add --version-compatible and/or --hardware-compat ampere+ to build portable engines)")
