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
* any other dynamic dimension (sequence length, image size) has no safe default: it must be given,
  otherwise a UsageError names the input and the dimension;
* min <= opt <= max, ranks match the model, and fixed dimensions are not contradicted.

Inputs with only fixed dimensions are validated but left out of the profile (TensorRT needs profile
entries for dynamic inputs only).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from trtopt.tensors import TensorInfo
from trtopt.tensors import ShapeProfile
from trtopt.errors import UsageError

Shape = tuple[int, ...]
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


def derive_profile(inputs: Sequence[TensorInfo], shapes: Mapping[str, Shape] | str | None = None,
                   min_shapes: Mapping[str, Shape] | str | None = None,
                   opt_shapes: Mapping[str, Shape] | str | None = None,
                   max_shapes: Mapping[str, Shape] | str | None = None,
                   default_max_batch: int = 32) -> ShapeProfile:
    """The min/opt/max profile for every dynamic input (rules in the module docstring).

    Flags may be given as parsed mappings or as the raw flag text. Raises UsageError naming the
    flag, input and dimension for unknown names, rank or fixed-dimension mismatches, a dynamic
    non-batch dimension without a value, or min > opt > max.
    """
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
            roles = _dim_roles(info, axis, known, default_max_batch)
            if not roles["min"] <= roles["opt"] <= roles["max"]:
                raise UsageError(
                    f"input {info.name!r} dimension {axis}: min {roles['min']} <= opt {roles['opt']} <= max "
                    f"{roles['max']} "
                    "does not hold; fix --min-shapes/--opt-shapes/--max-shapes")
            for role in ROLES:
                per_role[role].append(roles[role])
        for role in ROLES:
            getattr(profile, role)[info.name] = tuple(per_role[role])
    return profile


def profile_bounds(info: TensorInfo, profile: ShapeProfile) -> tuple[tuple[int, int] | None, ...] | None:
    """Per-axis inclusive (min, max) of `info` in `profile`, for TensorInfo.bounds (None if absent)."""
    low, high = profile.min.get(info.name), profile.max.get(info.name)
    if low is None or high is None:
        return None
    return tuple((lo, hi) if is_dynamic(dim) else None for dim, lo, hi in zip(info.shape, low, high))

