"""Shape-spec parsing (trtexec spelling) and optimization-profile derivation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from trtopt.tensors import TensorInfo
from trtopt.tensors import ShapeProfile
from trtopt.errors import UsageError
from trtopt.shapes import (derive_profile, format_shapes, parse_shapes, profile_bounds)

IMAGE = TensorInfo("input", np.dtype(np.float32), ("batch", 3, 16, 16))
TOKENS = TensorInfo("mask", np.dtype(np.int64), ("batch", "seq"))
STATIC = TensorInfo("scale", np.dtype(np.float32), (1, 4))


def test_parse_several_inputs() -> None:
    assert parse_shapes("input:1x3x224x224,mask:1x128") == {"input": (1, 3, 224, 224), "mask": (1, 128)}


def test_name_with_colon_uses_last_colon_and_quotes() -> None:
    assert parse_shapes("input:0:8x3") == {"input:0": (8, 3)}
    assert parse_shapes("'a,b:0':2x4,\"c\":5") == {"a,b:0": (2, 4), "c": (5,)}


@pytest.mark.parametrize("text, fragment", [
    ("input", "expected name:dims"),
    ("input:1x3xz", "positive integers"),
    ("input:0x3", "positive integers"),
    ("input:1x3,", "empty entry"),
    ("input:1,input:2", "given twice"),
    ("'input:1x3", "unbalanced"),
])
def test_parse_errors_name_the_flag(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        parse_shapes(text, "--opt-shapes")
    assert "--opt-shapes" in str(info.value)


@given(
    st.dictionaries(
        st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="'\""), min_size=1, max_size=8),
        st.lists(st.integers(1, 4096), min_size=1, max_size=5).map(tuple),
        min_size=1,
        max_size=4,
    )
)
def test_format_then_parse_round_trips(shapes: dict[str, tuple[int, ...]]) -> None:
    shapes = {name: shape for name, shape in shapes.items() if name.strip() == name}
    if shapes:
        assert parse_shapes(format_shapes(shapes)) == shapes


def test_default_batch_profile() -> None:
    profile = derive_profile([IMAGE, STATIC], default_max_batch=16)
    assert profile.min == {"input": (1, 3, 16, 16)}
    assert profile.opt == {"input": (16, 3, 16, 16)}
    assert profile.max == {"input": (16, 3, 16, 16)}


def test_shapes_alone_pins_the_shape_like_trtexec() -> None:
    profile = derive_profile([IMAGE], shapes="input:4x3x16x16")
    assert profile.min["input"] == profile.opt["input"] == profile.max["input"] == (4, 3, 16, 16)


def test_explicit_roles_win_and_missing_roles_default() -> None:
    profile = derive_profile([IMAGE], opt_shapes="input:8x3x16x16", max_shapes="input:64x3x16x16")
    assert profile.min["input"][0] == 1 and profile.opt["input"][0] == 8 and profile.max["input"][0] == 64
    profile = derive_profile([IMAGE], min_shapes={"input": (2, 3, 16, 16)})
    assert (profile.min["input"][0], profile.opt["input"][0], profile.max["input"][0]) == (2, 32, 32)


def test_non_batch_dynamic_dim_needs_a_value() -> None:
    with pytest.raises(UsageError, match=r"input 'mask' dimension 1 \(seq\) is dynamic") as info:
        derive_profile([TOKENS])
    assert "--shapes mask:1x1" in str(info.value)
    profile = derive_profile([TOKENS], min_shapes="mask:1x16", max_shapes="mask:8x128")
    assert profile.min["mask"] == (1, 16) and profile.opt["mask"] == (8, 128) and profile.max["mask"] == (8, 128)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"shapes": "image:1x3x16x16"}, "no input 'image'"),
    ({"max_shapes": "input:1x3x16"}, "rank 3"),
    ({"opt_shapes": "input:1x4x16x16"}, "dimension 1 is 4, but the model fixes it at 3"),
    ({"min_shapes": "input:8x3x16x16", "max_shapes": "input:4x3x16x16"}, "min 8 <= opt"),
    ({"shapes": "scale:2x4"}, "dimension 0 is 2"),
])
def test_profile_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        derive_profile([IMAGE, STATIC], **kwargs)


def test_error_names_the_flag() -> None:
    with pytest.raises(UsageError, match="^--max-shapes"):
        derive_profile([IMAGE], max_shapes="input:1x3x16")


def test_bounds_and_json_round_trip() -> None:
    profile = derive_profile([IMAGE], min_shapes="input:2x3x16x16", max_shapes="input:9x3x16x16")
    assert profile_bounds(IMAGE, profile) == ((2, 9), None, None, None)
    assert profile_bounds(STATIC, profile) is None
    restored = ShapeProfile.from_json(profile.to_json())
    assert isinstance(restored, ShapeProfile) and restored == profile
