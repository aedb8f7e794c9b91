"""Checks that need a CUDA device (run with `pytest -m gpu`; skipped without one)."""

import pytest
import torch

from major2minor.config import Config
from major2minor.methods.m2m import M2mConfig, M2mTranslator
from major2minor.models import build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _resnet32(seed):
    cfg = Config()
    cfg.model.name = "resnet32"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    return net.cuda().to(memory_format=torch.channels_last)


def test_translation_loop_never_waits_for_the_host():
    """T steps of forward/backward/normalise/clamp queue on the GPU without one host-device sync."""
    f, g = _resnet32(0).eval(), _resnet32(1)
    t = M2mTranslator(
        g, COUNTS, M2mConfig(), (0.0, 1.0), torch.Generator(device="cuda").manual_seed(0), channels_last=True
    )
    f_eval = t.eval_classifier(f)
    x0 = torch.rand(64, 3, 32, 32, device="cuda")
    target = torch.randint(0, 10, (64,), device="cuda")
    seed_class = torch.randint(0, 10, (64,), device="cuda")
    noise = torch.zeros_like(x0)
    t.translate(f_eval, x0, target, seed_class, noise)  # warm-up (cuDNN plans, allocator)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = t.translate(f_eval, x0, target, seed_class, noise)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.shape == x0.shape and x.device.type == "cuda"
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_translated_batch_on_the_gpu(amp):
    f, g = _resnet32(0), _resnet32(1)
    t = M2mTranslator(
        g,
        COUNTS,
        M2mConfig(gamma=0.0),
        (0.0, 1.0),
        torch.Generator(device="cuda").manual_seed(0),
        amp=amp,
        channels_last=True,
    )
    x = torch.rand(128, 3, 32, 32, device="cuda")
    y = torch.arange(128, device="cuda") % 10
    x_new, y_new, stats = t(f, x, y)
    assert x_new.dtype == torch.float32 and y_new.device.type == "cuda"
    assert stats.translated > 0 and stats.accepted > 0  # gamma 0: the Bernoulli draw decides
    changed = y_new != y
    assert int(changed.sum()) <= stats.accepted
    assert f.training  # f's mode restored


def test_m2m_run_on_cuda_end_to_end(tiny_cfg, tmp_path):
    from major2minor.pipeline import train

    cfg = tiny_cfg("method=m2m", "train.device=cuda", "model.name=cnn")
    summary = train(cfg, log=None)
    assert summary["device"].startswith("cuda") and summary["device_name"]
    assert summary["m2m"]["slots"] > 0
    assert 0.0 <= summary["test_at_best"]["bacc"] <= 1.0
