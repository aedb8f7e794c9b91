"""The documentation's Python example runs as written, and M2mTranslator leaves the caller's g alone."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from major2minor import M2mConfig, M2mTranslator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "own_training_loop.py"

# runs the example's main() in a fresh process (it switches the CPU to flush-to-zero, which must not
# leak into the test process), then checks the g it built is still the caller's, untouched
CHECK = f"""
import runpy
result = runpy.run_path({str(EXAMPLE)!r}, run_name="docs_example")["main"]()
g = result["g"]
assert g.training, "the translator switched the caller's g to eval mode"
assert all(p.requires_grad for p in g.parameters()), "the translator froze the caller's g"
print("caller's g unchanged")
"""


@pytest.mark.slow  # the example script in a subprocess
def test_own_training_loop_example_runs_and_accepts_translations():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "caller's g unchanged" in out
    acceptance = float(re.search(r"acceptance rate: ([\d.]+)%", out).group(1))
    bacc = float(re.search(r"test balanced accuracy: ([\d.]+)%", out).group(1))
    assert acceptance >= 2.0, out  # the knobs are chosen so that M2m actually translates on this data
    assert bacc > 50.0, out


class SmallCNN(nn.Module):
    """A g with BatchNorm, so that folding (m2m.fold_generator) has something to fold."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def _batch(n=48):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.arange(n) % 3


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("ensemble", [False, True])
def test_translator_leaves_the_callers_g_unchanged_and_translates_the_same(fold, ensemble):
    gs = [SmallCNN(0), SmallCNN(1)] if ensemble else [SmallCNN(0)]
    for g in gs:
        g.train()
    before = [copy.deepcopy(g.state_dict()) for g in gs]
    frozen = [copy.deepcopy(g).eval().requires_grad_(False) for g in gs]  # what the caller could pass instead
    cfg = M2mConfig(beta=0.5, gamma=0.0, step_size=0.5, fold_generator=fold, fold_classifier=False)
    arg = gs if ensemble else gs[0]
    translator = M2mTranslator(arg, [200, 100, 5], cfg, rng=torch.Generator().manual_seed(0))
    f = SmallCNN(2).train()
    x, y = _batch()
    x1, y1, stats = translator(f, x, y)
    assert stats.accepted > 0
    for g, state in zip(gs, before):
        assert g.training and all(p.requires_grad for p in g.parameters())
        assert all(p.grad is None for p in g.parameters())
        assert all(torch.equal(v, state[k]) for k, v in g.state_dict().items())  # BN statistics too
        assert all(t is not g for t in translator.g_models)
    assert all(not p.requires_grad for t in translator.g_models for p in t.parameters())
    # the translator's copy has the same weights: the same translations as from an already frozen g
    again = M2mTranslator(frozen if ensemble else frozen[0], [200, 100, 5], cfg, rng=torch.Generator().manual_seed(0))
    x2, y2, _ = again(f, x, y)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
