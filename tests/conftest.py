import pytest

from major2minor.config import load_config


@pytest.fixture
def tiny_cfg(tmp_path):
    """A few-second digits-lt config writing into tmp_path."""

    def make(*overrides):
        return load_config(
            "digits-lt",
            [
                "train.epochs=3",
                "train.deferred_epoch=1",
                "optim.warmup_epochs=1",
                "optim.milestones=[2]",
                "train.progress=none",
                f"run.root={tmp_path / 'runs'}",
                *overrides,
            ],
        )

    return make


@pytest.fixture(autouse=True)
def _private_decode_cache(tmp_path_factory, monkeypatch):
    """No test writes the decoded-array cache into the real per-user cache directory."""
    monkeypatch.setenv("M2M_CACHE", str(tmp_path_factory.mktemp("m2m-cache")))
