"""Shape specs in trtexec spelling and the optimization profile derived from them.

``--shapes input:1x3x224x224,mask:1x128`` (and ``--min-shapes/--opt-shapes/--max-shapes``) is what
TensorRT users already type, so the build CLI takes exactly that. The profile rules live here, in
pure functions, because every backend with dynamic shapes needs the same answer and because a bad
profile should fail before an expensive build starts, with a message naming the input and axis.

Profile rules (per dynamic dimension of each input):

* an explicit ``--min/--opt/--max-shapes`` value wins for its role;
* ``--shapes`` fills every role not given explicitly (trtexec: ``--shapes`` alone pins the shape);
* the batch dimension (axis 0) otherwise defaults to min 1, max ``default_max_batch`` (or the largest
  value given) and opt = max, since TensorRT tunes kernels for opt and throughput runs use big batches;
* any other dynamic dimension (sequence length, image size) is taken from the calibration or
  validation data when given, for backends that need a profile (TensorRT): min and max of what the
  data holds, opt = max. Data outside explicit flags is refused. There is no safe default
  otherwise: backends that need a profile get a UsageError naming the input and the dimension,
  others (ONNX Runtime, which runs any shape) leave the input out of the profile;
* min <= opt <= max, ranks match the model, and fixed dimensions are not contradicted.

Inputs with only fixed dimensions are validated but left out of the profile (TensorRT needs profile
entries for dynamic inputs only).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from trtopt.errors import UsageError
from trtopt.settings import DEFAULT_MAX_BATCH
from trtopt.tensors import ShapeProfile, TensorInfo

Shape = tuple[int, ...]
ObservedShapes = Mapping[str, tuple[Shape, Shape]]  # input -> (smallest, largest) size per axis
ROLES = ("min", "opt", "max")
_ROLE_FLAGS = {"min": "--min-shapes", "opt": "--opt-shapes", "max": "--max-shapes"}


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on `separator` except inside '...' or "..." (trtexec lets names be quoted)."""
    parts, current, quote = [], [], ""
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote:
        raise ValueError(f"unbalanced {quote} quote")
    parts.append("".join(current))
    return parts


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
        return name[1:-1]
    return name


def parse_shape(text: str, flag: str = "--shapes", name: str = "") -> Shape:
    """Parse ``1x3x224x224`` into a tuple of positive ints."""
    where = f"{flag} {name}:" if name else f"{flag} "
    fields = text.strip().lower().split("x")
    dims = []
    for field in fields:
        if not field.strip().isdigit() or int(field) < 1:
            raise UsageError(
                f"{where}{text!r}: expected dimensions like 1x3x224x224 (positive integers separated by 'x')"
            )
        dims.append(int(field))
    return tuple(dims)


def parse_shapes(text: str, flag: str = "--shapes") -> dict[str, Shape]:
    """Parse trtexec's ``name:1x3x224x224,other:1x128`` into ``{name: shape}``.

    Tensor names may contain ':' (ONNX names such as ``input:0``): the shape follows the *last*
    colon, and a name may also be quoted (``'input:0':1x3``) as trtexec allows. Raises UsageError
    naming `flag` on any malformed entry or a name given twice.
    """
    try:
        entries = _split_outside_quotes(text.strip(), ",")
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}") from exc
    shapes: dict[str, Shape] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            raise UsageError(f"{flag} {text!r}: empty entry; expected name:1x3x224x224[,name2:...]")
        name, colon, dims = entry.rpartition(":")
        name = _unquote(name.strip())
        if not colon or not name:
            raise UsageError(f"{flag} {entry!r}: expected name:dims such as input:1x3x224x224")
        if name in shapes:
            raise UsageError(f"{flag}: input {name!r} is given twice")
        shapes[name] = parse_shape(dims, flag, name)
    return shapes


def format_shape(shape: Sequence[int]) -> str:
    """``(1, 3, 224, 224)`` -> ``1x3x224x224`` (the spelling the flags take)."""
    return "x".join(str(d) for d in shape)


def format_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    """Inverse of parse_shapes (a name containing ',' is quoted)."""
    def spell(name: str) -> str:
        if "," not in name:
            return name
        return f'"{name}"' if "'" in name else f"'{name}'"
    return ",".join(f"{spell(name)}:{format_shape(shape)}" for name, shape in shapes.items())


def is_dynamic(dim: object) -> bool:
    """A dim is dynamic when symbolic (str), unknown (None) or negative (TensorRT's -1)."""
    return not isinstance(dim, int) or dim < 0


def _as_mapping(value: Mapping[str, Shape] | str | None, flag: str) -> dict[str, Shape]:
    if value is None:
        return {}
    if isinstance(value, str):
        return parse_shapes(value, flag) if value.strip() else {}
    return {name: tuple(int(d) for d in shape) for name, shape in value.items()}


def _check_names(given: dict[str, Shape], flag: str, by_name: Mapping[str, TensorInfo]) -> None:
    for name, shape in given.items():
        info = by_name.get(name)
        if info is None:
            raise UsageError(
                f"{flag}: the model has no input {name!r}; its inputs are {[i.describe() for i in by_name.values()]}"
            )
        if len(shape) != len(info.shape):
            raise UsageError(
                f"{flag} {name}:{format_shape(shape)}: rank {len(shape)}, but input {info.describe()} has rank "
                f"{len(info.shape)}"
            )
        for axis, (got, want) in enumerate(zip(shape, info.shape)):
            if not is_dynamic(want) and got != want:
                raise UsageError(
                    f"{flag} {name}:{format_shape(shape)}: dimension {axis} is {got}, but the model fixes it at "
                    f"{want} ({info.describe()})"
                )


def _dim_roles(info: TensorInfo, axis: int, known: dict[str, int], default_max_batch: int) -> dict[str, int]:
    """Fill the roles of one dynamic dimension that no flag gave (see the module docstring)."""
    if len(known) == len(ROLES):
        return known
    if axis == 0:
        filled = dict(known)
        filled.setdefault("min", min([1, *known.values()]))
        filled.setdefault("max", max([default_max_batch, *known.values()]))
        filled.setdefault("opt", filled["max"])
        return filled
    if not known:
        raise UsageError(
            f"input {info.name!r} dimension {axis} ({info.shape[axis] or '?'}) is dynamic and has no default; "
            f"give it with --shapes {info.name}:{format_shape([d if not is_dynamic(d) else 1 for d in info.shape])} "
            "(or --min-shapes/--opt-shapes/--max-shapes)")
    filled = dict(known)
    filled.setdefault("min", min(known.values()))
    filled.setdefault("max", max(known.values()))
    filled.setdefault("opt", filled["max"])
    return filled


def observe_shapes(feeds: Iterable[Mapping[str, np.ndarray]]) -> ObservedShapes:
    """Per input, the smallest and largest size of every axis over the given feeds (one data pass)."""
    observed: dict[str, tuple[Shape, Shape]] = {}
    for feed in feeds:
        for name, array in feed.items():
            shape = tuple(int(d) for d in np.shape(array))
            low, high = observed.get(name, (shape, shape))
            if len(low) != len(shape):
                continue  # a rank mismatch is reported by the feed check, with the data's origin
            observed[name] = (tuple(map(min, low, shape)), tuple(map(max, high, shape)))
    return observed


def _check_observed(info: TensorInfo, axis: int, roles: Mapping[str, int], observed: ObservedShapes,
                    what: str) -> None:
    """Data whose size on a dynamic axis falls outside the flags' profile cannot be checked or calibrated."""
    if info.name not in observed or axis == 0:
        return
    low, high = observed[info.name][0][axis], observed[info.name][1][axis]
    if low < roles["min"] or high > roles["max"]:
        raise UsageError(
            f"{what}: input {info.name!r} dimension {axis} is {low}..{high} in the data, outside "
            f"[{roles['min']}, {roles['max']}] given by --shapes/--min-shapes/--max-shapes; give shapes that cover "
            "the data, or leave them out to take them from it")


def derive_profile(inputs: Sequence[TensorInfo], shapes: Mapping[str, Shape] | str | None = None,
                   min_shapes: Mapping[str, Shape] | str | None = None,
                   opt_shapes: Mapping[str, Shape] | str | None = None,
                   max_shapes: Mapping[str, Shape] | str | None = None,
                   default_max_batch: int = DEFAULT_MAX_BATCH, *, observed: ObservedShapes | None = None,
                   observed_from: str = "the data", require_all: bool = True,
                   profile_observed: bool = True) -> ShapeProfile:
    """The min/opt/max profile for every dynamic input (rules in the module docstring).

    Flags may be given as parsed mappings or as the raw flag text. ``observed`` (from
    :func:`observe_shapes` over calibration or validation data, described by ``observed_from``)
    gives the non-batch dynamic dimensions no flag gave: min and max are what the data holds, opt
    is the max (unless ``profile_observed`` is False: then the data is only checked against the
    flags). Flags win; data outside them is refused. Without ``require_all`` (backends that
    run any shape, such as ONNX Runtime), an input with a dimension nobody gave is left out of the
    profile instead of refused. Raises UsageError naming the flag, input and dimension for unknown
    names, rank or fixed-dimension mismatches, a dynamic non-batch dimension without a value (when
    required), or min > opt > max.
    """
    observed = observed or {}
    if default_max_batch < 1:
        raise UsageError(f"default max batch must be >= 1, got {default_max_batch}")
    by_name = {info.name: info for info in inputs}
    given = {"shapes": _as_mapping(shapes, "--shapes")}
    for role in ROLES:
        given[role] = _as_mapping({"min": min_shapes, "opt": opt_shapes, "max": max_shapes}[role], _ROLE_FLAGS[role])
    for key, values in given.items():
        _check_names(values, _ROLE_FLAGS.get(key, "--shapes"), by_name)

    profile = ShapeProfile()
    for info in inputs:
        if all(not is_dynamic(d) for d in info.shape):
            continue
        per_role: dict[str, list[int]] = {role: [] for role in ROLES}
        for axis, dim in enumerate(info.shape):
            if not is_dynamic(dim):
                for role in ROLES:
                    per_role[role].append(int(dim))  # type: ignore[arg-type]
                continue
            known = {}
            for role in ROLES:
                source = given[role].get(info.name) or given["shapes"].get(info.name)
                if source is not None:
                    known[role] = source[axis]
            if known:
                _check_observed(info, axis, _dim_roles(info, axis, known, default_max_batch), observed, observed_from)
            elif axis > 0 and info.name in observed and profile_observed:
                low, high = observed[info.name][0][axis], observed[info.name][1][axis]
                known = {"min": low, "opt": high, "max": high}
            elif axis > 0 and not require_all:
                break  # no value for this dimension: the input stays out of the profile (runs any shape)
            roles = _dim_roles(info, axis, known, default_max_batch)
            if not roles["min"] <= roles["opt"] <= roles["max"]:
                raise UsageError(
                    f"input {info.name!r} dimension {axis}: min {roles['min']} <= opt {roles['opt']} <= max "
                    f"{roles['max']} "
                    "does not hold; fix --min-shapes/--opt-shapes/--max-shapes")
            for role in ROLES:
                per_role[role].append(roles[role])
        else:
            for role in ROLES:
                getattr(profile, role)[info.name] = tuple(per_role[role])
    return profile


def profile_bounds(info: TensorInfo, profile: ShapeProfile) -> tuple[tuple[int, int] | None, ...] | None:
    """Per-axis inclusive (min, max) of `info` in `profile`, for TensorInfo.bounds (None if absent)."""
    low, high = profile.min.get(info.name), profile.max.get(info.name)
    if low is None or high is None:
        return None
    return tuple((lo, hi) if is_dynamic(dim) else None for dim, lo, hi in zip(info.shape, low, high))



def fit_profile_batch(feed: Mapping[str, np.ndarray], inputs: Sequence[TensorInfo],
                      profile: ShapeProfile) -> tuple[dict[str, np.ndarray], int]:
    """Pad a batch smaller than the profile's minimum batch by repeating its last sample.

    The last batch of a data set is usually short; an engine built for ``--shapes x:8x...`` cannot
    run 3 samples. Only inputs whose axis 0 is a dynamic batch axis are padded. Returns (feed,
    padded rows); callers drop the padding from the outputs with :func:`unpad_outputs`.
    """
    batched = [info.name for info in inputs if info.shape and is_dynamic(info.shape[0]) and info.name in feed]
    rows = int(np.shape(feed[batched[0]])[0]) if batched else 0
    wanted = max((profile.min[name][0] for name in batched if profile.min.get(name)), default=0)
    if not rows or rows >= wanted:
        return dict(feed), 0
    pad = wanted - rows
    padded = {name: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) if name in batched else a
              for name, a in feed.items()}
    return padded, pad


def unpad_outputs(outputs: Mapping[str, np.ndarray], rows: int, padded: int) -> dict[str, np.ndarray]:
    """Outputs of the real ``rows`` samples of a batch :func:`fit_profile_batch` padded by ``padded``."""
    if not padded:
        return dict(outputs)
    return {name: a[:rows] if np.ndim(a) and np.shape(a)[0] == rows + padded else a for name, a in outputs.items()}
