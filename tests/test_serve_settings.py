"""Serve settings: the TOML file's errors name file and key; batching limits follow the engine's profile."""

from __future__ import annotations

import numpy as np
import pytest

from trtopt.errors import UsageError
from trtopt.serve.settings import BatchingSettings, effective_batching, engine_max_batch_size, read_config
from trtopt.tensors import TensorInfo

IMAGES = TensorInfo("input", np.dtype(np.float32), ("batch", 3, 16, 16))
LOGITS = TensorInfo("logits", np.dtype(np.float32), ("batch", 10))
PROFILE = {"min": {"input": [1, 3, 16, 16]}, "opt": {"input": [8, 3, 16, 16]}, "max": {"input": [8, 3, 16, 16]}}


def test_config_file_sets_defaults_and_per_model_values(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text("[defaults]\ninstances = 2\n[models.a]\npreferred_batch_size = [8, 4, 4]\nmax_queue_size = 5\n")
    defaults, models = read_config(path)
    assert defaults.instances == 2 and models["a"].instances == 2, "a model inherits [defaults]"
    assert models["a"].preferred_batch_size == (4, 8) and models["a"].max_queue_size == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.a]\nmax_batch = 4\n", "[models.a]: unknown key(s) ['max_batch']"),
        ("[models.a]\ninstances = 0\n", "[models.a].instances: expected an integer >= 1"),
        ("[models.a]\npreferred_batch_size = 4\n", "preferred_batch_size: expected a list of positive integers"),
        ("[server]\nport = 1\n", "unknown section(s) ['server']"),
        ("[models.a\n", "is not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "serve.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match="serve.toml") as error:
        read_config(path)
    assert message in str(error.value)


def test_engine_batch_limit_comes_from_the_profile():
    assert engine_max_batch_size([IMAGES], [LOGITS], PROFILE) == 8
    pinned = {role: {"input": [8, 3, 16, 16]} for role in ("min", "opt", "max")}
    assert engine_max_batch_size([IMAGES], [LOGITS], pinned) == 0, "a profile pinned to batch 8 cannot batch requests"
    static = TensorInfo("input", np.dtype(np.float32), (1, 3, 16, 16))
    assert engine_max_batch_size([static], [LOGITS], None) == 0


def test_max_batch_size_may_not_exceed_the_engine():
    assert effective_batching(BatchingSettings(), 8, "m").max_batch_size == 8
    assert effective_batching(BatchingSettings(max_batch_size=1), 8, "m").max_batch_size == 1
    with pytest.raises(UsageError, match="max_batch_size 16 exceeds the engine's batch limit 8"):
        effective_batching(BatchingSettings(max_batch_size=16), 8, "m")
    with pytest.raises(UsageError, match=r"preferred_batch_size \[16\] above max_batch_size 8"):
        effective_batching(BatchingSettings(preferred_batch_size=(16,)), 8, "m")
