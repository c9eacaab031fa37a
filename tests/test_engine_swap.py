"""Replacing an engine folder while others read it: readers always get a complete engine, no debris stays."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ENGINE_READER
from trtopt.errors import UsageError
from trtopt.pipeline import build
from trtopt.repository import load

def _build(model: Path, engines: Path, name: str = "net", batch_size: int = 32) -> None:
    """A small, quick CPU build that replaces any engine of that name (a new batch size makes a different one)."""
    build(
        model,
        name=name,
        engines_dir=engines,
        backend="onnxruntime",
        accuracy_samples=8,
        threads=1,
        force=True,
        batch_size=batch_size,
    )


def test_readers_never_see_a_missing_or_mixed_engine_during_rebuilds(residual_convnet, tmp_path):
    engines = tmp_path / "engines"
    _build(residual_convnet, engines, batch_size=8)
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", ENGINE_READER, str(engines / "net"), str(stop)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        time.sleep(1.0)  # the reader is loading in a loop by now
        for seed in range(1, 4):  # sequential replacements
            _build(residual_convnet, engines, batch_size=8 + seed)
        errors: list[BaseException] = []

        def rebuild(seed: int) -> None:
            try:
                _build(residual_convnet, engines, batch_size=8 + seed)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        writers = [threading.Thread(target=rebuild, args=(seed,)) for seed in (4, 5, 6)]  # concurrent replacements
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        assert not errors, errors
        time.sleep(0.5)
    finally:
        stop.touch()
        _, said = reader.communicate(timeout=60)
    summary = re.search(r"^(\d+) loads, (\d+) failed$", said, re.MULTILINE)
    assert summary, said
    reads, failures = map(int, summary.groups())
    assert reads > 5 and failures == 0, said
    leftovers = sorted(p.name for p in engines.iterdir() if p.name.startswith(".net.") and not p.name.endswith(".lock"))
    current = os.path.basename(os.path.realpath(engines / "net"))
    assert leftovers == [current], leftovers  # only the live version: no .old, .staging or older versions
    with load(engines / "net") as runner:
        assert runner.inputs[0].name == "input"


def test_folder_from_before_versioning_is_replaced(residual_convnet, tmp_path):
    engines = tmp_path / "engines"
    _build(residual_convnet, engines, batch_size=8)
    plain = engines / "plain"
    os.rename(os.path.realpath(engines / "net"), plain)  # a real folder, as older releases wrote them
    manifest = json.loads((plain / "manifest.json").read_text())
    manifest["name"] = "plain"
    (plain / "manifest.json").write_text(json.dumps(manifest))
    load(plain).close()
    _build(residual_convnet, engines, name="plain")
    assert plain.is_symlink()
    assert sorted(
        p.name for p in engines.iterdir() if p.name.startswith(".plain.") and not p.name.endswith(".lock")
    ) == [os.path.basename(os.path.realpath(plain))]
    load(plain).close()


def test_an_engine_name_that_is_a_file_is_refused(residual_convnet, tmp_path):
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "net").write_text("not an engine")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        _build(residual_convnet, engines, batch_size=8)
    assert (engines / "net").read_text() == "not an engine"
