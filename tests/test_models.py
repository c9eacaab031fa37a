"""Model zoo: registry (torch-free), exact lenet architecture, ResNet/MobileNetV2 shapes and configs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from trtopt.errors import UsageError
from trtopt.models import InputSpec, list_models, model_input_spec, parse_config_overrides, resolve_config

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

SMALL = {"in_channels": 1, "num_classes": 10, "input_size": 16}


def test_registry_and_specs_do_not_import_torch():
    code = ("import sys, trtopt, trtopt.models as m; s = m.model_input_spec('resnet50'); m.list_models(); "
            "print(s.shape, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"


def test_list_models():
    assert list_models() == ["lenet", "mobilenetv2", "resnet18", "resnet50"]


def test_input_spec_roundtrip_and_validation():
    spec = model_input_spec("resnet18")
    assert spec.shape == (3, 224, 224) and spec.name == "input" and len(spec.mean) == 3
    assert InputSpec.from_json(spec.to_json()) == spec
    with pytest.raises(UsageError, match="std"):
        InputSpec("input", (1, 4, 4), mean=(0.0,), std=(0.0,))
    with pytest.raises(UsageError, match="malformed"):
        InputSpec.from_json({"shape": [1, 2, 2]})


def test_lenet_is_the_classic_cnn():
    from trtopt.models import create_model

    model = create_model("lenet")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 20, (5, 5)), (20, 20, (5, 5))]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(320, 50), (50, 10)]
    assert any(isinstance(m, torch.nn.MaxPool2d) and m.kernel_size == 2 for m in model.modules())
    assert model(torch.zeros(3, 1, 16, 16)).shape == (3, 10)
    assert model_input_spec("lenet").shape == (1, 16, 16)


@pytest.mark.parametrize(
    "name, params", [("resnet18", 11_689_512), ("resnet50", 25_557_032), ("mobilenetv2", 3_504_872)]
)
def test_imagenet_defaults_match_published_sizes(name, params):
    from trtopt.models import create_model

    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("name, extra", [("resnet18", {"width": 8}), ("resnet50", {"width": 4}),
                                         ("mobilenetv2", {"width_mult": 0.25})])
def test_small_variants_fit_digits(name, extra):
    from trtopt.models import create_model

    model = create_model(name, **SMALL, **extra).eval()
    assert model_input_spec(name, **SMALL, **extra).shape == (1, 16, 16)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_mobilenetv2_is_depthwise_separable():
    from trtopt.models import create_model

    model = create_model("mobilenetv2", **SMALL, width_mult=0.5)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_config_errors_name_the_key():
    with pytest.raises(UsageError, match="unknown model 'vgg'"):
        resolve_config("vgg")
    with pytest.raises(UsageError, match="no config key 'depth'"):
        resolve_config("resnet18", depth=34)
    with pytest.raises(UsageError, match="width must be an integer"):
        resolve_config("resnet18", width=2.5)
    with pytest.raises(UsageError, match="fixed"):
        resolve_config("lenet", width=3)
    assert parse_config_overrides(["width=8", "width_mult=0.5"]) == {"width": 8, "width_mult": 0.5}
    with pytest.raises(UsageError, match="key=value"):
        parse_config_overrides(["width"])
