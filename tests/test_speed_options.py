"""The speed options that must not change results: flush-to-zero and translating through a
BatchNorm-folded copy of f (the other shortcuts are tested in test_m2m.py)."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from major2minor.config import load_config
from major2minor.methods.m2m import M2mConfig, M2mTranslator
from major2minor.models import build_model
from major2minor.models.fold import FoldedMirror, conv_bn_pairs


def _resnet(seed, classes=3):
    cfg = load_config(None, ["model.name=resnet32"])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_model(cfg, classes, (3, 8, 8), (0.5,) * 3, (0.25,) * 3)
        for m in net.modules():  # BatchNorm that is not the identity, so folding has work to do
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.1, 0.1)
    return net


def test_folded_mirror_follows_f_as_it_trains():
    f = _resnet(0)
    mirror = FoldedMirror(f)
    assert len(mirror.pairs) == 31 and not any(isinstance(m, nn.BatchNorm2d) for m in mirror.net.modules())
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    f.eval()
    assert torch.allclose(mirror.refresh()(x), f(x), atol=1e-4)

    # one training step changes f's weights and BatchNorm statistics ...
    f.train()
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    nn.functional.cross_entropy(f(x), torch.tensor([0, 1, 2, 0] * 4)).backward()
    opt.step()
    f.eval()
    stale = mirror.net(x)
    assert not torch.allclose(stale, f(x), atol=1e-3)  # ... so the old mirror is wrong ...
    assert torch.allclose(mirror.refresh()(x), f(x), atol=1e-4)  # ... until refreshed
    assert not any(p.requires_grad for p in mirror.net.parameters())
    assert all(p.requires_grad for p in f.parameters())  # f itself is untouched


def test_conv_bn_pairs_are_the_folded_ones():
    f = _resnet(0)
    pairs = dict(conv_bn_pairs(f))
    assert pairs["conv_1_3x3"] == "bn_1" and pairs["stage_2.0.conv_b"] == "stage_2.0.bn_b"


@pytest.mark.slow  # ResNets translated twice; the mirror is checked above
def test_translating_through_folded_f_gives_the_same_batch():
    f, g = _resnet(0), _resnet(1)
    x = torch.rand(48, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2] * 16)
    out = {}
    for fold in (False, True):
        t = M2mTranslator(g, [200, 60, 10], M2mConfig(beta=0.99, gamma=0.3, fold_classifier=fold))
        out[fold] = t(f, x, y, rng=torch.Generator().manual_seed(3))
        assert f.training  # f's mode is restored
    (xa, ya, sa), (xb, yb, sb) = out[False], out[True]
    assert sa.accepted > 0 and torch.equal(sa.accepted_per_class, sb.accepted_per_class)
    assert torch.equal(ya, yb)
    assert (xa - xb).norm() / xa.norm() < 1e-4  # rounding only


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_flush_denormals_reaches_every_thread_when_set_first():
    """Set before torch's thread pool starts, every thread flushes subnormal results to zero."""
    out = _python("""
        import torch
        torch.set_num_threads(2)
        from major2minor.numerics import flush_denormals, denormal_mode
        ok = flush_denormals(True)
        tiny = torch.full((1 << 20,), 1 << 20, dtype=torch.int32).view(torch.float32)   # 1.5e-39
        print(ok, denormal_mode(), int((tiny * 1.0).count_nonzero()))
    """)
    assert out == "True flush 0"


def test_flush_denormals_reports_threads_it_could_not_reach():
    """Set after the pool started, the worker threads keep subnormals: reported, not hidden."""
    out = _python("""
        import torch
        torch.set_num_threads(2)
        from major2minor.numerics import flush_denormals, denormal_mode
        print(denormal_mode(), flush_denormals(True), denormal_mode())
    """)
    assert out == "keep False mixed"


@pytest.mark.slow  # a whole run in a subprocess
def test_train_flushes_on_every_thread_and_restores_the_caller(tmp_path):
    """The engine sets the mode first thing, so a CLI-style run flushes on all its threads while it
    trains; afterwards the calling thread has IEEE subnormals again (NumPy/Python code after training)."""
    out = _python(f"""
        import torch
        torch.set_num_threads(2)
        from major2minor.config import load_config
        from major2minor.pipeline import train
        from major2minor.numerics import denormal_mode, thread_flushes
        cfg = load_config("digits-lt", ["train.epochs=1", "train.deferred_epoch=0", "optim.warmup_epochs=0",
                                        "optim.milestones=[]", "train.progress=none", "model.name=mlp",
                                        "run.root={tmp_path}"])
        seen = []
        train(cfg, log=lambda message: seen.append((denormal_mode(), "flush_denormal" in message)))
        print(seen[0][0], any(w for _, w in seen), thread_flushes())
    """)
    assert out == "flush False False"


@pytest.mark.slow  # ResNets translated twice; the padding rule is checked below
def test_padding_the_translation_batch_changes_nothing():
    """Filler rows (a few distinct batch sizes for cuDNN on a GPU) are dropped and affect no real row."""
    f, g = _resnet(0), _resnet(1)
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 2] * 10)
    out = {}
    for multiple in (1, 16):
        t = M2mTranslator(g, [200, 60, 10], M2mConfig(beta=0.99, gamma=0.3, pad_multiple=multiple))
        assert t.padding(13, torch.device("cpu")) == (0 if multiple == 1 else 3)
        out[multiple] = t(f, x, y, rng=torch.Generator().manual_seed(3))
    (xa, ya, sa), (xb, yb, sb) = out[1], out[16]
    assert sa.translated % 16 != 0 and sa.translated == sb.translated  # padding is not counted
    assert torch.equal(sa.accepted_per_class, sb.accepted_per_class) and torch.equal(ya, yb)
    assert torch.allclose(xa, xb, atol=1e-5)
    assert torch.allclose(sa.g_target_prob_sum, sb.g_target_prob_sum, atol=1e-5)


def test_automatic_padding_only_where_cudnn_autotunes(monkeypatch):
    t = M2mTranslator(None, [200, 60, 10], M2mConfig())
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert t.padding(13, torch.device("cpu")) == 0 and t.padding(13, torch.device("cuda")) == 0
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    assert t.padding(13, torch.device("cpu")) == 0 and t.padding(13, torch.device("cuda")) == 19


def test_flushing_subnormals_does_not_change_the_translated_batch():
    """A confident g makes the CE gradient underflow into subnormals; flushing them changes nothing.

    Single-threaded in a fresh process, so the mode can be switched for all the work."""
    out = _python("""
        import torch, torch.nn as nn, torch.nn.functional as F
        torch.set_num_threads(1)
        from major2minor.methods.m2m import M2mConfig
        from major2minor.methods.m2m import M2mTranslator
        gen = torch.Generator().manual_seed(0)
        g, f = nn.Linear(12, 3), nn.Linear(12, 3)
        with torch.no_grad():
            g.weight.copy_(80 * torch.randn(3, 12, generator=gen))   # saturated softmax
            f.weight.copy_(torch.randn(3, 12, generator=gen))
        x = torch.rand(96, 12, generator=gen)
        y = torch.tensor([0, 1, 2] * 32)
        torch.set_flush_denormal(False)
        p = F.softmax(g(x), 1)
        subnormal = int(((p > 0) & (p < 1.1754944e-38)).sum())
        results = []
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            for lam in (0.0, 0.5):
                t = M2mTranslator(g, [200, 60, 10], M2mConfig(beta=0.99, gamma=0.5, lam=lam), (0.0, 1.0))
                results.append(t(f, x, y, rng=torch.Generator().manual_seed(1)))
        same = all(torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0], atol=1e-6)
                   and torch.equal(a[2].accepted_per_class, b[2].accepted_per_class)
                   for a, b in zip(results[:2], results[2:]))
        print(subnormal > 0, same, results[0][2].accepted > 0)
    """)
    assert out == "True True True"


def test_a_model_fx_cannot_trace_is_translated_unfolded_with_a_warning():
    import pytest

    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

        def forward(self, x):
            h = self.bn(self.conv(x))
            if h.sum() > 0:
                h = h.relu()
            return self.head(h.mean((2, 3)))

    f = Branchy()
    t = M2mTranslator(None, [200, 60, 10], M2mConfig())
    with pytest.warns(UserWarning, match="fold_classifier: cannot fold Branchy"):
        assert t.eval_classifier(f) is f


def test_amp_auto_picks_bf16_only_where_it_pays(monkeypatch):
    from major2minor import numerics
    from major2minor.registry import MODELS

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert numerics.choose_amp("none", cpu, ("cpu",)) == ("none", "train.amp=none")
    assert numerics.choose_amp("bf16", cpu, ()) == ("bf16", "train.amp=bf16")
    assert numerics.choose_amp("auto", cpu, ())[0] == "none"  # small models: measured slower in bf16
    monkeypatch.setattr(numerics, "native_bf16_cpu", lambda: (True, "AVX-512-BF16"))
    assert numerics.choose_amp("auto", cpu, ("cpu",)) == ("bf16", "auto: bf16, the CPU has AVX-512-BF16")
    assert numerics.choose_amp("auto", cpu, True)[0] == "bf16"  # True: every device
    monkeypatch.setattr(numerics, "native_bf16_cpu", lambda: (False, "no native BF16"))
    amp, why = numerics.choose_amp("auto", cpu, ("cpu",))
    assert amp == "none" and "emulated" in why
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert numerics.choose_amp("auto", cuda, ("cpu", "cuda"))[0] == "bf16"
    # a model declared for the CPU only (ResNet-32: launch-bound on a GPU, bf16 measured slower there)
    amp, why = numerics.choose_amp("auto", cuda, ("cpu",))
    assert amp == "none" and "not measured faster" in why and "cuda" in why
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert numerics.choose_amp("auto", cuda, ("cpu", "cuda"))[0] == "none"
    # the declarations the rule reads: small models never, 32x32 ResNets on the CPU, ResNet-50 everywhere
    import major2minor.catalogue  # noqa: F401  (registers the built-in models)

    declared = {name: tuple(MODELS.entry(name).info.bf16) for name in MODELS.names()}
    assert declared["mlp"] == declared["cnn"] == ()
    assert declared["resnet32"] == declared["preact_resnet18"] == ("cpu",)
    assert declared["resnet50"] == ("cpu", "cuda")


def test_native_bf16_probe_agrees_with_the_cpu_flags():
    """torch's probe and the flags the operating system reports tell the same story on this machine."""
    from major2minor import numerics

    native, how = numerics.native_bf16_cpu()
    flags = numerics._cpu_flags()
    if flags:  # Linux: /proc/cpuinfo
        assert native == bool({"avx512_bf16", "amx_bf16", "bf16"} & flags), (how, sorted(flags)[:5])


def test_the_run_records_the_autocast_it_used(tiny_cfg):
    import json

    from major2minor.pipeline import train

    cfg = tiny_cfg("train.epochs=1")
    summary = train(cfg, log=None)
    env = json.loads((__import__("pathlib").Path(summary["run_dir"]) / "environment.json").read_text())
    assert summary["amp"] == env["amp"] == "none"  # the digits CNN is too small to gain from bf16
    assert env["amp_reason"] == "auto: fp32, the model is too small to gain from bf16"


def test_numerics_autocast_is_bf16_only_for_amp_bf16():
    """Every forward pass of a run goes through numerics.autocast: bf16 when train.amp resolved to bf16."""
    from major2minor.numerics import autocast

    a, b = torch.rand(4, 4), torch.rand(4, 4)
    for device in (torch.device("cpu"), "cpu"):
        with autocast(device, "bf16"):
            assert (a @ b).dtype == torch.bfloat16
        with autocast(device, "none"):
            assert (a @ b).dtype == torch.float32
