import pytest

from major2minor.config import OptimConfig
from major2minor.engine import learning_rate


def test_paper_cifar_schedule_at_boundaries():
    cfg = OptimConfig(lr=0.1, warmup_epochs=5, milestones=[160, 180], decay=0.01)
    assert learning_rate(cfg, 0) == pytest.approx(0.02)
    assert learning_rate(cfg, 4) == pytest.approx(0.1)
    assert learning_rate(cfg, 5) == pytest.approx(0.1)
    assert learning_rate(cfg, 159) == pytest.approx(0.1)
    assert learning_rate(cfg, 160) == pytest.approx(1e-3)
    assert learning_rate(cfg, 179) == pytest.approx(1e-3)
    assert learning_rate(cfg, 180) == pytest.approx(1e-5)


def test_step_decay_without_warmup():
    cfg = OptimConfig(lr=0.1, warmup_epochs=0, milestones=[30, 60], decay=0.1)
    assert [round(learning_rate(cfg, e), 6) for e in (0, 29, 30, 59, 60)] == [0.1, 0.1, 0.01, 0.01, 0.001]
