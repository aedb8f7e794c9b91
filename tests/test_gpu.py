"""Checks that need a CUDA device (run with `pytest -m gpu`; skipped without one)."""
import pytest
import torch

from major2minor.config import Config, M2mConfig
from major2minor.methods.m2m import M2mTranslator
from major2minor.models import build_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

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
    t = M2mTranslator(g, COUNTS, M2mConfig(), (0.0, 1.0), torch.Generator(device="cuda").manual_seed(0),
                      channels_last=True)
    f_eval = t.eval_classifier(f)
    x0 = torch.rand(64, 3, 32, 32, device="cuda")
    target = torch.randint(0, 10, (64,), device="cuda")
    seed_class = torch.randint(0, 10, (64,), device="cuda")
    noise = torch.zeros_like(x0)
    t.translate(f_eval, x0, target, seed_class, noise)        # warm-up (cuDNN plans, allocator)
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
    t = M2mTranslator(g, COUNTS, M2mConfig(gamma=0.0), (0.0, 1.0), torch.Generator(device="cuda").manual_seed(0),
                      amp=amp, channels_last=True)
    x = torch.rand(128, 3, 32, 32, device="cuda")
    y = torch.arange(128, device="cuda") % 10
    x_new, y_new, stats = t(f, x, y)
    assert x_new.dtype == torch.float32 and y_new.device.type == "cuda"
    assert stats.translated > 0 and stats.accepted > 0             # gamma 0: the Bernoulli draw decides
    changed = (y_new != y)
    assert int(changed.sum()) <= stats.accepted
    assert f.training                                            # f's mode restored


def test_m2m_run_on_cuda_end_to_end(tiny_cfg, tmp_path):
    from major2minor.engine import train
    cfg = tiny_cfg("method=m2m", "train.device=cuda", "model.name=cnn")
    summary = train(cfg, log=None)
    assert summary["device"].startswith("cuda") and summary["device_name"]
    assert summary["m2m"]["slots"] > 0
    assert 0.0 <= summary["test_at_best"]["bacc"] <= 1.0


def test_cuda_graph_translation_is_the_eager_translation_and_follows_f():
    """A replayed graph computes what an eager call computes, also after f's weights change."""
    f, g = _resnet32(0), _resnet32(1)
    eager = M2mTranslator(g, COUNTS, M2mConfig(), (0.0, 1.0), channels_last=True)
    graphed = M2mTranslator(g, COUNTS, M2mConfig(cuda_graph=True), (0.0, 1.0), channels_last=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.rand(64, 3, 32, 32, device="cuda", generator=gen)
    target = torch.randint(0, 10, (64,), device="cuda", generator=gen)
    seed_class = torch.randint(0, 10, (64,), device="cuda", generator=gen)
    noise = torch.zeros_like(x0)
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    for round_ in range(3):
        f.eval()
        a = eager.translate(eager.eval_classifier(f), x0, target, seed_class, noise)
        b = graphed.translate_graphed(graphed.eval_classifier(f), x0, target, seed_class, noise)
        assert torch.allclose(a, b, atol=1e-5), round_
        f.train()                                   # change f's weights and BatchNorm statistics
        torch.nn.functional.cross_entropy(f(x0), target).backward()
        opt.step()
        opt.zero_grad()
    x2 = torch.rand_like(x0)                        # new inputs go through the static buffers
    assert torch.allclose(eager.translate(eager.eval_classifier(f), x2, target, seed_class, noise),
                          graphed.translate_graphed(graphed.eval_classifier(f), x2, target, seed_class, noise),
                          atol=1e-5)
    assert len(graphed._graphs) == 2                # the pool and one captured size


def test_cuda_graph_batch_matches_eager_batch():
    f, g = _resnet32(0), _resnet32(1)
    x = torch.rand(128, 3, 32, 32, device="cuda")
    y = torch.arange(128, device="cuda") % 10
    out = {}
    for graph in (False, True):
        t = M2mTranslator(g, COUNTS, M2mConfig(gamma=0.0, cuda_graph=graph), (0.0, 1.0), channels_last=True)
        out[graph] = t(f, x, y, generator=torch.Generator(device="cuda").manual_seed(3))
    (xa, ya, sa), (xb, yb, sb) = out[False], out[True]
    assert torch.equal(ya, yb) and sa.translated == sb.translated > 0
    assert torch.allclose(xa, xb, atol=1e-4)
