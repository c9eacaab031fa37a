"""The legacy TensorRT calibration cache: exact encoding, round trip, and bad files."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from trtopt.errors import UsageError
from trtopt.fileio import sha256_file
from trtopt.quantization.table import ScaleTable, TensorStats
from trtopt.quantization.trt_cache import read_trt_cache, version_code, write_trt_cache


def test_round_trip_and_hex_is_big_endian_float32_scale(tmp_path: Path, residual_convnet: Path) -> None:
    amax = {"input": 2.6431, "conv0/out:0": 0.0123, "big": 4.5e4, "tiny": 3.3e-7}
    table = ScaleTable("0" * 64, "entropy", {}, 8, {k: TensorStats(v) for k, v in amax.items()})
    path = write_trt_cache(table, tmp_path / "calib.cache", "10.9.0")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100900-EntropyCalibration2"
    assert lines[1:] == [f"{name}: {struct.pack('>f', value / 127).hex()}" for name, value in amax.items()]
    back = read_trt_cache(path, residual_convnet)
    assert back.model_sha256 == sha256_file(residual_convnet)
    for name, value in amax.items():
        assert np.float32(back.amax(name) / 127) == np.float32(value / 127)
    assert back.params["trt_version_code"] == 100900


def test_imported_table_is_keyed_to_the_named_model(tmp_path: Path, residual_convnet: Path) -> None:
    (tmp_path / "c.cache").write_text("TRT-8601-EntropyCalibration2\ninput: 3c010a14\nzero: 00000000\n")
    table = read_trt_cache(tmp_path / "c.cache", residual_convnet)
    table.ensure_matches(residual_convnet)
    assert list(table.tensors) == ["input"]  # a zero scale is left out with a warning
    assert table.amax("input") == pytest.approx(struct.unpack(">f", bytes.fromhex("3c010a14"))[0] * 127)


@pytest.mark.parametrize("text, message", [
    ("not a cache\n", "is not a TensorRT cache header"),
    ("TRT-100900-EntropyCalibration2\ninput 3c010a14\n", "line 2"),
    ("TRT-100900-EntropyCalibration2\ninput: 7f800000\n", "tensor 'input' has scale inf"),
])
def test_bad_caches_name_file_and_line(tmp_path: Path, residual_convnet: Path, text: str, message: str) -> None:
    (tmp_path / "bad.cache").write_text(text)
    with pytest.raises(UsageError, match=message):
        read_trt_cache(tmp_path / "bad.cache", residual_convnet)


def test_version_codes() -> None:
    assert version_code("10.9.0") == 100900 and version_code("8.6.1") == 8601 and version_code("100300") == 100300
    with pytest.raises(UsageError, match="--trt-version 'ten'"):
        version_code("ten")
