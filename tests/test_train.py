"""Trainer API in one process: reproducibility, resume, accumulation, distillation, checkpoints, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trtopt.errors import UsageError

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TIMING_KEYS = {"samples_per_s", "epoch_time_s"}


def _config(out, **overrides):
    from trtopt.train import TrainConfig

    return TrainConfig(
        **{"model": "lenet", "dataset": "digits", "out": str(out), "epochs": 2, "threads": 1, **overrides}
    )


def _deterministic(metrics):
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics]


def _read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_matches_uninterrupted_run(tmp_path):
    from trtopt.train import load_checkpoint, train

    full = train(_config(tmp_path / "full"))
    first = train(_config(tmp_path / "split", stop_after_epoch=1))
    assert first.epochs_done == 1 and len(_read_metrics(tmp_path / "split")) == 1
    resumed = train(_config(tmp_path / "split", resume=str(tmp_path / "split" / "last.pt")))
    assert resumed.epochs_done == 2
    assert _deterministic(_read_metrics(tmp_path / "split")) == _deterministic(_read_metrics(tmp_path / "full"))
    assert _deterministic(resumed.metrics) == _deterministic(full.metrics)
    assert resumed.test_accuracy == full.test_accuracy
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # a different seed really changes the run (the comparison above is not vacuous)
    other = train(_config(tmp_path / "seed1", seed=1, epochs=1))
    assert _deterministic(other.metrics)[0]["loss"] != _deterministic(full.metrics)[0]["loss"]


def test_checkpoint_contents_and_files(tmp_path):
    from trtopt.train import load_checkpoint, train

    result = train(_config(tmp_path, epochs=3, optimizer="adamw", lr=2e-3, scheduler="step"))
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint["model_name"] == "lenet" and checkpoint["epoch"] == 3 and len(checkpoint["metrics"]) == 3
    assert checkpoint["input_spec"]["shape"] == [1, 16, 16] and checkpoint["dataset"] == "digits"
    assert "state" in checkpoint["optimizer"] and checkpoint["trtopt_version"]
    assert [m["lr"] for m in checkpoint["metrics"]] == pytest.approx([2e-3, 2e-4, 2e-5])
    best = load_checkpoint(result.best_checkpoint)
    assert best["best_val_accuracy"] == max(m["val_accuracy"] for m in checkpoint["metrics"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_accuracy"] == result.test_accuracy > 0.8
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_gradient_accumulation_equals_large_batch(tmp_path):
    from trtopt.train import train

    big = train(_config(tmp_path / "big", epochs=1, batch_size=32))
    accum = train(_config(tmp_path / "accum", epochs=1, batch_size=16, accum_steps=2))
    assert accum.metrics[0]["loss"] == pytest.approx(big.metrics[0]["loss"], rel=1e-4)
    assert accum.metrics[0]["val_loss"] == pytest.approx(big.metrics[0]["val_loss"], rel=1e-3)
    no_accum = train(_config(tmp_path / "small", epochs=1, batch_size=16))
    assert no_accum.metrics[0]["val_loss"] != pytest.approx(big.metrics[0]["val_loss"], rel=1e-3)


def test_distillation_loss_terms():
    from trtopt.train.distill import distillation_loss

    logits = torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(distillation_loss(logits, torch.randn(6, 10), labels, 4.0, 0.0), ce)
    assert float(distillation_loss(logits, logits.clone(), labels, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, -logits, labels, 2.0, 1.0)) > 0.1


def test_student_learns_from_teacher_alone(tmp_path, trained_lenet):
    """weight 1.0 ignores the labels: the student can only reach high accuracy through the teacher."""
    from trtopt.train import train

    small = {"in_channels": 1, "num_classes": 10, "input_size": 16, "width": 4}
    result = train(
        _config(
            tmp_path,
            model="resnet18",
            model_config=small,
            epochs=2,
            teacher=str(trained_lenet.checkpoint),
            distill_weight=1.0,
            distill_temperature=2.0,
            lr=0.05,
        )
    )
    assert result.test_accuracy > 0.7
    with pytest.raises(UsageError, match="predicts 10 classes but the dataset has 3"):
        x = np.random.default_rng(0).standard_normal((30, 1, 16, 16)).astype(np.float32)
        np.savez(tmp_path / "three.npz", x=x, y=np.arange(30) % 3)
        train(_config(tmp_path / "t3", dataset=str(tmp_path / "three.npz"), model="resnet18",
                      model_config={"width": 4}, epochs=1, teacher=str(trained_lenet.checkpoint)))


def test_npz_dataset_fills_model_config(tmp_path):
    from trtopt.data.digits import load_digits_split
    from trtopt.train import load_checkpoint, train

    x, y = load_digits_split("train")
    np.savez(tmp_path / "user.npz", x=x[:, :, ::2, ::2][:400], y=y[:400])  # 1x8x8 images
    result = train(_config(tmp_path / "run", dataset=str(tmp_path / "user.npz"), model="mobilenetv2",
                           model_config={"width_mult": 0.25}, epochs=1))
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint["model_config"] == {"in_channels": 1, "num_classes": 10, "input_size": 8, "width_mult": 0.25}
    assert checkpoint["dataset"].endswith("user.npz") and checkpoint["input_spec"]["mean"] == [0.0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "vgg"}, "unknown model 'vgg'"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"optimizer": "lion"}, "--optimizer must be one of"),
        ({"amp": True, "device": "cpu"}, "--amp needs a CUDA device"),
        ({"resume": "nowhere.pt"}, "--resume: checkpoint not found: nowhere.pt"),
        (
            {"model": "resnet18", "model_config": {"input_size": 32}},
            "takes inputs 1x32x32 but dataset 'digits' has samples 1x16x16",
        ),
    ],
)
def test_bad_config(tmp_path, overrides, message):
    from trtopt.train import train

    if overrides.get("amp") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present: --amp is valid here")
    with pytest.raises(UsageError, match=message):
        train(_config(tmp_path / "out", epochs=overrides.pop("epochs", 1), **overrides))
    assert not (tmp_path / "out" / "last.pt").exists()


def test_resume_wrong_model_and_finished_run(tmp_path, trained_lenet):
    from trtopt.train import train

    with pytest.raises(UsageError, match="already completed 3 epochs"):
        train(_config(tmp_path / "a", epochs=3, resume=str(trained_lenet.checkpoint)))
    with pytest.raises(UsageError, match="checkpoint is lenet"):
        train(
            _config(tmp_path / "b", model="resnet18", model_config={"width": 4}, resume=str(trained_lenet.checkpoint))
        )
