"""Exactness tests for M2m (design section 2)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.methods.m2m import M2mConfig, M2mTranslator, random_start, seed_weights, slot_probability


class Linear(nn.Module):
    def __init__(self, d=12, c=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, c)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(c, d, generator=g))
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x.flatten(1))


class ConstantLogits(nn.Module):
    """A 'g' whose output does not depend on x: its CE gradient w.r.t. x is zero."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def _batch(n=64, d=12, seed=0, labels=(0, 1, 2)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    y = torch.tensor([labels[i % len(labels)] for i in range(n)])
    return x, y


def test_slot_probability_uses_n_max_not_class_zero():
    counts = torch.tensor([10.0, 100.0, 50.0])  # largest class is NOT class 0
    y = torch.tensor([0, 1, 2])
    assert slot_probability(counts, y).tolist() == pytest.approx([0.9, 0.0, 0.5])
    translator = M2mTranslator(Linear(), [10, 100, 50], M2mConfig(beta=0.9))
    y = torch.tensor([0] * 4000 + [1] * 10)
    slots, target, _, _ = translator.slot_and_seed(y, torch.Generator().manual_seed(0))
    assert (target == 0).all()  # the largest class never gets a slot
    assert abs(len(slots) / 4000 - 0.9) < 0.03  # class 0: 1 - 10/100


def test_seed_weights_formula_and_all_zero_slots_skipped():
    counts = torch.tensor([100.0, 40.0, 10.0])
    y = torch.tensor([0, 1, 2, 2])
    p = seed_weights(counts, y, torch.tensor([2, 1]), beta=0.9)
    expected = [[1 - 0.9**90, 1 - 0.9**30, 0.0, 0.0], [1 - 0.9**60, 0.0, 0.0, 0.0]]
    assert torch.allclose(p, torch.tensor(expected), rtol=1e-6, atol=0)
    # a batch of minority entries only: every slot has all-zero weights and is skipped
    translator = M2mTranslator(Linear(), [100, 40, 10], M2mConfig(beta=0.9))
    slots, _, seeds, p_seed = translator.slot_and_seed(torch.tensor([2, 2, 2, 2]), torch.Generator().manual_seed(0))
    assert len(slots) == len(seeds) == len(p_seed) == 0


def test_seeds_come_only_from_larger_classes_and_p_seed_matches():
    counts = [100, 40, 10]
    translator = M2mTranslator(Linear(), counts, M2mConfig(beta=0.99))
    x, y = _batch(300)
    slots, target, seeds, p_seed = translator.slot_and_seed(y, torch.Generator().manual_seed(1))
    ct = torch.tensor(counts, dtype=torch.float32)
    assert (ct[y[seeds]] > ct[target]).all()
    assert p_seed.tolist() == pytest.approx((1 - 0.99 ** (ct[y[seeds]] - ct[target])).tolist(), rel=1e-5)


def _translate(cfg, g=None, f=None, counts=(200, 100, 5), n=96, seed=0, bounds=(0.0, 1.0)):
    g = g if g is not None else Linear(seed=1)
    f = f if f is not None else Linear(seed=2)
    t = M2mTranslator(g, list(counts), cfg, bounds=bounds, rng=torch.Generator().manual_seed(seed))
    x, y = _batch(n)
    return t, x, y, t(f, x, y)


def test_rejected_slots_keep_their_original_sample_and_label():
    _, x, y, (x2, y2, stats) = _translate(M2mConfig(beta=0.5, gamma=1.01))  # gamma > 1: nothing passes
    assert stats.slots > 0 and stats.accepted == 0
    assert torch.equal(x2, x) and torch.equal(y2, y)


def test_acceptance_needs_both_gamma_and_bernoulli():
    # gamma = 0 passes every translation, so acceptance is the Bernoulli draw alone ...
    _, _, _, (_, _, all_pass) = _translate(M2mConfig(beta=0.5, gamma=0.0))
    assert all_pass.accepted == all_pass.slots > 0  # beta 0.5, deltas >= 95: p_seed == 1
    _, _, _, (_, _, rare) = _translate(M2mConfig(beta=0.99999, gamma=0.0))
    assert rare.slots > 0 and rare.accepted < 0.05 * rare.slots  # p_seed ~ 1e-3: the draw rejects
    # ... and with p_seed == 1, the gamma test alone decides
    _, _, _, (_, _, none_pass) = _translate(M2mConfig(beta=0.5, gamma=1.01))
    assert none_pass.accepted == 0


def test_no_reject_keeps_every_translated_slot():
    _, x, y, (x2, y2, stats) = _translate(M2mConfig(beta=0.99999, gamma=1.01, reject=False))
    assert stats.accepted == stats.slots > 0
    changed = (x2 != x).any(1)
    assert changed.sum() == stats.slots


def test_accepted_slots_get_translated_input_and_target_label():
    _, x, y, (x2, y2, stats) = _translate(M2mConfig(beta=0.5, gamma=0.0))
    changed = (x2 != x).any(1)
    assert changed.sum() == stats.accepted
    assert torch.equal(y2, y)  # a slot's label is its own class k = y_i


def test_translation_lowers_g_cross_entropy():
    g, f = Linear(seed=1), Linear(seed=2)
    cfg = M2mConfig(lam=0.0, steps=10, step_size=0.1, noise="none")
    t = M2mTranslator(g, [200, 100, 5], cfg, bounds=None)
    x0 = torch.rand(32, 12, generator=torch.Generator().manual_seed(3))
    k = torch.full((32,), 2)
    x_star = t.translate(f, x0, k, torch.zeros(32, dtype=torch.long), torch.zeros_like(x0))
    before = F.cross_entropy(g(x0), k, reduction="none")
    after = F.cross_entropy(g(x_star), k, reduction="none")
    assert (after < before).all()
    # each step moves each sample by exactly eta in L2 (unbounded input, no clamp)
    assert ((x_star - x0).norm(dim=1) <= 10 * 0.1 + 1e-5).all()


def test_lambda_term_lowers_f_seed_class_logit():
    g = ConstantLogits([0.0, 0.0, 0.0])  # CE(g) has no gradient: only lam * f_{k0} acts
    f = Linear(seed=2)
    t = M2mTranslator(g, [200, 100, 5], M2mConfig(lam=0.5, steps=5, noise="none"), bounds=None)
    x0 = torch.rand(16, 12, generator=torch.Generator().manual_seed(4))
    k0 = torch.zeros(16, dtype=torch.long)
    x_star = t.translate(f, x0, torch.full((16,), 2), k0, torch.zeros_like(x0))
    assert (f(x_star)[:, 0] < f(x0)[:, 0]).all()


def test_g_is_frozen_and_never_changes_while_f_trains():
    g, f = Linear(seed=1), Linear(seed=2)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    t = M2mTranslator(g, [200, 100, 5], M2mConfig(beta=0.5, gamma=0.0), rng=torch.Generator().manual_seed(0))
    frozen = t.g_models[0]  # the translator's own copy: the caller's g is left as it was
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    assert all(p.requires_grad for p in g.parameters()) and g.training
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    assert not {id(p) for p in frozen.parameters()} & {id(p) for grp in opt.param_groups for p in grp["params"]}
    f.train()
    for _ in range(3):
        x, y = _batch(64)
        x, y, _ = t(f, x, y)
        assert f.training  # f is back in train mode after translating
        loss = F.cross_entropy(f(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in g.parameters())


def test_inputs_stay_inside_bounds():
    cfg = M2mConfig(beta=0.5, gamma=0.0, step_size=5.0, noise="per-sample", noise_radius=10.0)
    _, _, _, (x2, _, stats) = _translate(cfg)
    assert stats.accepted > 0
    assert x2.min() >= 0.0 and x2.max() <= 1.0


def test_same_seed_same_batch():
    a = _translate(M2mConfig(beta=0.9, gamma=0.3), seed=5)[3]
    b = _translate(M2mConfig(beta=0.9, gamma=0.3), seed=5)[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = _translate(M2mConfig(beta=0.9, gamma=0.3), seed=6)[3]
    assert not torch.equal(a[0], c[0])


def test_official_noise_bounds_each_channel_across_the_batch():
    gen = torch.Generator().manual_seed(0)
    noise = random_start((64, 3, 8, 8), "official", 0.5, gen, torch.device("cpu"))
    per_channel = noise.transpose(0, 1).reshape(3, -1).norm(dim=1)
    assert per_channel.tolist() == pytest.approx([0.5] * 3, rel=1e-4)  # each channel slice over the batch
    per_sample = noise.flatten(1).norm(dim=1)
    assert per_sample.max() < 0.5 / 4  # so each sample's share is small
    small = random_start((2, 3, 8, 8), "official", 0.5, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert small.flatten(1).norm(dim=1).mean() > 4 * per_sample.mean()  # shrinks as the batch grows


def test_per_sample_noise_bounds_each_sample():
    noise = random_start((64, 3, 8, 8), "per-sample", 0.5, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert noise.flatten(1).norm(dim=1).tolist() == pytest.approx([0.5] * 64, rel=1e-4)
    assert not random_start((4, 5), "none", 0.5, torch.Generator(), torch.device("cpu")).any()


def test_skipping_bernoulli_rejected_slots_is_exact():
    """The shortcut (translate only slots the Bernoulli draw accepts) gives the same batch."""
    for noise in ("official", "per-sample"):
        cfg_fast = M2mConfig(beta=0.99, gamma=0.2, noise=noise)
        cfg_full = M2mConfig(beta=0.99, gamma=0.2, noise=noise, translate_rejected=True)
        _, _, _, (xa, ya, sa) = _translate(cfg_fast, seed=3, n=128)
        _, _, _, (xb, yb, sb) = _translate(cfg_full, seed=3, n=128)
        assert sa.translated < sb.translated  # work was saved ...
        assert torch.equal(sa.accepted_per_class, sb.accepted_per_class)
        assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-6)  # ... and the batch is the same


def test_ensemble_uses_mean_of_softmax():
    g1, g2, f = Linear(seed=1), Linear(seed=7), Linear(seed=2)
    t = M2mTranslator([g1, g2], [200, 100, 5], M2mConfig())
    x, _ = _batch(8)
    expected = torch.log((F.softmax(g1(x), 1) + F.softmax(g2(x), 1)) / 2)
    assert torch.allclose(t.g_log_probs(f, x), expected, atol=1e-6)


def test_self_mode_uses_f_as_g():
    f = Linear(seed=2)
    t = M2mTranslator(None, [200, 100, 5], M2mConfig())
    x, _ = _batch(8)
    assert torch.allclose(t.g_log_probs(f, x), F.log_softmax(f(x), 1))


def test_folded_generator_is_the_same_function():
    from major2minor.config import load_config
    from major2minor.models import build_model
    from major2minor.models.fold import fold_batchnorm

    cfg = load_config(None, ["model.name=resnet32"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = build_model(cfg, 3, (3, 8, 8), (0.5,) * 3, (0.25,) * 3).eval()
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.rand(16, 3, 8, 8)
    folded = fold_batchnorm(g)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(folded(x), g(x), atol=1e-4)
    assert all(isinstance(m, nn.BatchNorm2d) for m in [g.bn_1])  # the original is untouched
    t = M2mTranslator(g, [200, 100, 5], M2mConfig())
    assert t.g_models[0] is not g and not any(p.requires_grad for p in t.g_models[0].parameters())


def test_f_probability_statistics_are_those_of_the_accepted_samples():
    """f's statistics are measured (eval mode) on exactly the accepted translated inputs."""
    g, f = Linear(seed=1), Linear(seed=2)
    t = M2mTranslator(g, [200, 100, 5], M2mConfig(beta=0.99, gamma=0.2))
    x, y = _batch(96)
    x_new, y_new, s = t(f, x, y, rng=torch.Generator().manual_seed(4))
    changed = (x_new != x).any(1)
    assert int(changed.sum()) == s.accepted > 0
    probs = F.softmax(f(x_new[changed]), 1)
    assert torch.allclose(s.f_target_prob_sum, probs.gather(1, y_new[changed][:, None]).sum(), atol=1e-5)
    assert 0 < float(s.f_seed_prob_sum) and float(s.f_seed_prob_sum + s.f_target_prob_sum) <= s.accepted + 1e-5


def test_generator_keyword_is_the_former_name_of_rng():
    """``generator=`` (constructor and call) still works, warns, and draws the same as ``rng=``."""
    g, f = Linear(seed=1), Linear(seed=2)
    x, y = _batch(64)
    new = M2mTranslator(g, [200, 100, 5], M2mConfig(beta=0.99, gamma=0.2), rng=torch.Generator().manual_seed(4))
    with pytest.warns(DeprecationWarning, match="rng="):
        old = M2mTranslator(
            g, [200, 100, 5], M2mConfig(beta=0.99, gamma=0.2), generator=torch.Generator().manual_seed(4)
        )
    assert old.rng is not None and torch.equal(new(f, x, y)[0], old(f, x, y)[0])
    with pytest.warns(DeprecationWarning):
        x_old = new(f, x, y, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(x_old, new(f, x, y, rng=torch.Generator().manual_seed(5))[0])
    with pytest.raises(TypeError, match="not both"):
        new(f, x, y, rng=torch.Generator(), generator=torch.Generator())


def test_statistics_when_nothing_is_accepted():
    g, f = Linear(seed=1), Linear(seed=2)
    t = M2mTranslator(g, [200, 100, 5], M2mConfig(beta=0.99, gamma=1.01))  # gamma > 1: all rejected
    x, y = _batch(64)
    x_new, y_new, s = t(f, x, y, rng=torch.Generator().manual_seed(4))
    assert s.translated > 0 and s.accepted == 0 and torch.equal(x_new, x) and torch.equal(y_new, y)
    assert float(s.f_seed_prob_sum) == 0.0 == float(s.f_target_prob_sum)


def test_f_statistics_use_the_logit_scale_of_fs_loss():
    """For a cosine head (LDAM), f's probabilities in the statistics are softmax(s * cosine)."""
    g, f = Linear(seed=1), Linear(seed=2)
    x, y = _batch(96)
    out = {}
    for scale in (1.0, 30.0):
        t = M2mTranslator(g, [200, 100, 5], M2mConfig(beta=0.99, gamma=0.2), f_logit_scale=scale)
        out[scale] = t(f, x, y, rng=torch.Generator().manual_seed(4))
    (xa, ya, sa), (xb, yb, sb) = out[1.0], out[30.0]
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the translation itself is unchanged
    changed = (xb != x).any(1)
    expected = F.softmax(30.0 * f(xb[changed]), 1).gather(1, yb[changed][:, None]).sum()
    assert torch.allclose(sb.f_target_prob_sum, expected, atol=1e-4)
    assert not torch.allclose(sa.f_target_prob_sum, sb.f_target_prob_sum, atol=1e-3)


def test_ldam_m2m_passes_the_ldam_scale_to_the_statistics():
    from major2minor.config import load_config
    from major2minor.methods.m2m import M2mRebalancer

    cfg = load_config("digits-lt", ["method=ldam-m2m", "loss.ldam_scale=12"])
    assert cfg.loss.name == "ldam"

    class Ctx:  # the parts of the engine's RunContext that setup() reads
        device = torch.device("cpu")
        rank = 0
        log = staticmethod(lambda s: None)
        generators = []
        amp = "none"

        class bundle:
            bounds, is_image = (0.0, 1.0), True

    cfg.m2m.self_generator = True  # no g to train for this check
    r = M2mRebalancer(cfg, [90, 30, 5])
    r.setup(Ctx())
    assert r.translator.f_logit_scale == 12.0
    cfg2 = load_config("digits-lt", ["method=m2m", "m2m.self_generator=true"])
    r2 = M2mRebalancer(cfg2, [90, 30, 5])
    r2.setup(Ctx())
    assert r2.translator.f_logit_scale == 1.0


def test_m2m_self_computes_f_once_per_step_with_the_same_result():
    """M2m-Self: f plays g, so one forward of f per step gives both terms of the loss; the translation
    equals the two-pass computation CE(f(x), k) + lam * f_k0(x) up to rounding, with half the passes."""
    f = Linear(seed=3)
    calls = []
    f.register_forward_hook(lambda *a: calls.append(1))
    cfg = M2mConfig(lam=0.5, steps=4, step_size=0.2, noise="none", fold_classifier=False)
    t = M2mTranslator(None, [200, 100, 5], cfg, bounds=(0.0, 1.0))
    x0 = torch.rand(16, 12, generator=torch.Generator().manual_seed(5))
    target, k0 = torch.full((16,), 2), torch.zeros(16, dtype=torch.long)
    x_star = t.translate(f, x0, target, k0, torch.zeros_like(x0))
    assert len(calls) == cfg.steps  # one forward of f per step

    x = x0.clone()  # the two-pass reference, as M2m with a separate g computes it
    for _ in range(cfg.steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(f(x), target, reduction="sum") + cfg.lam * f(x).gather(1, k0[:, None]).sum()
        (grad,) = torch.autograd.grad(loss, [x])
        x = (x.detach() - cfg.step_size * grad / (grad.norm(dim=1, keepdim=True) + 1e-10)).clamp(0, 1)
    assert torch.allclose(x_star, x, atol=1e-5)


def test_the_translator_takes_labels_of_any_integer_type():
    x, y = _batch()
    runs = []
    for dtype in (torch.int64, torch.int32, torch.uint8):
        translator = M2mTranslator(Linear(seed=1), [100, 40, 10], M2mConfig(beta=0.9), rng=torch.Generator())
        x_new, y_new, stats = translator(Linear(seed=2), x, y.to(dtype), torch.Generator().manual_seed(0))
        assert y_new.dtype == torch.int64
        runs.append((x_new, y_new, stats.accepted))
    assert all(torch.equal(r[0], runs[0][0]) and torch.equal(r[1], runs[0][1]) for r in runs)
    assert runs[0][2] > 0  # something was translated, so the labels were used
    with pytest.raises(ValueError, match=r"y must be integer class indices 0\.\.C-1, got a float32 tensor"):
        translator(Linear(seed=2), x, y.float())


def test_g_need_reads_the_generator_path_sentinel(tmp_path):
    """None = no g, [] = the pipeline's cached ERM g, paths = given: interpreted by methods.base.g_need alone."""
    from major2minor.config import load_config
    from major2minor.methods.base import g_need

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "best.pt").write_bytes(b"")
    assert g_need(load_config(None, ["method=erm"])) == "none"
    assert g_need(load_config(None, ["method=drw"])) == "none"
    assert g_need(load_config(None, ["method=m2m-self"])) == "none"
    assert g_need(load_config(None, ["method=m2m"])) == "cached"
    assert g_need(load_config(None, ["method=m2m", f"m2m.generator={tmp_path / 'g'}"])) == "given"
