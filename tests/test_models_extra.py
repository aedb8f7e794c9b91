"""preact_resnet18 (SUN397) and resnet50 (ImageNet-LT): the shared interface, shapes, widths, heads."""

import pytest
import torch

from major2minor.config import ModelConfig, load_config
from major2minor.models import build_model
from major2minor.models.base import Classifier, NormedLinear
from major2minor.registry import MODELS


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, more threads only contend (10x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_preact_resnet18_shapes_width_and_interface():
    torch.manual_seed(0)
    m = MODELS.create("preact_resnet18", ModelConfig(), 397, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert isinstance(m, Classifier) and m.num_features == 512
    # 64/128/256/512 channels: 4x ResNet-32's 16/32/64 (and one more stage)
    assert [
        m.layer1[0].conv1.out_channels,
        m.layer2[0].conv1.out_channels,
        m.layer3[0].conv1.out_channels,
        m.layer4[0].conv1.out_channels,
    ] == [64, 128, 256, 512]
    assert n_params(m) == pytest.approx(11.37e6, rel=0.01)
    x = torch.rand(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 512) and m(x).shape == (2, 397)
    assert torch.allclose(m.forward_head(feats), m(x), atol=1e-5)
    # normalisation lives inside the model, in non-persistent buffers
    assert "input_mean" not in m.state_dict() and m.input_std.flatten().tolist() == [0.25] * 3
    # gradients reach the input (M2m translates inputs through the model)
    x.requires_grad_(True)
    m.eval()
    m(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_preact_resnet18_keys_and_normed_head():
    m = MODELS.create("preact_resnet18", ModelConfig(), 10, (3, 32, 32), head="normed")
    assert isinstance(m.linear, NormedLinear)
    keys = m.state_dict().keys()
    assert {"conv1.weight", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight", "bn.weight", "linear.weight"} <= set(
        keys
    )
    assert "layer1.0.shortcut.0.weight" not in keys
    out = m(torch.rand(2, 3, 32, 32))
    assert out.abs().max() <= 1.0 + 1e-5  # cosine logits


def test_resnet50_128px_and_torchvision_layout():
    torch.manual_seed(0)
    m = MODELS.create("resnet50", ModelConfig(), 1000, (3, 128, 128), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert n_params(m) == 25_557_032  # torchvision's resnet50 count
    assert m.num_features == 2048
    m.eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 128, 128)
        assert m.forward_features(x).shape == (1, 2048) and m(x).shape == (1, 1000)
    keys = set(m.state_dict())
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer4.2.conv3.weight",
        "linear.weight",
    } <= keys


def test_image_models_reject_feature_inputs():
    for name in ("preact_resnet18", "resnet50"):
        with pytest.raises(ValueError, match=rf"model.name={name} needs image inputs.*model.name=mlp"):
            MODELS.create(name, ModelConfig(), 5, (50,))
    with pytest.raises(ValueError, match="too small"):
        MODELS.create("resnet50", ModelConfig(), 5, (3, 8, 8))


def test_mlp_of_the_text_recipes():
    cfg = load_config("reuters")
    m = build_model(cfg, 36, (1000,))
    assert [layer.out_features for layer in m.modules() if isinstance(layer, torch.nn.Linear)] == [256, 36]
    assert m(torch.rand(4, 1000)).shape == (4, 36)
    cfg = load_config("sun397")
    assert build_model(cfg, 397, (3, 32, 32)).__class__.__name__ == "PreActResNet"
