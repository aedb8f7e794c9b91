"""``m2m tune``: a validation-only Optuna search over M2m's knobs, resumable, through the CLI."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from major2minor import pipeline, tune
from major2minor.cli import main
from major2minor.config import differing_settings, load_config, read_yaml
from major2minor.registry import REBALANCERS

#: A few-second digits-lt schedule (T0 = 2 of 4 epochs).
TINY = ["train.epochs=4", "train.deferred_epoch=2", "optim.milestones=[3]", "optim.warmup_epochs=1", "train.threads=1"]


class NoTestMetrics(dict):
    """A run summary whose test metrics are gone, and whose reader fails loudly if it asks for them."""

    def __getitem__(self, key):
        assert not str(key).startswith("test"), f"the tuner read {key} (test metrics)"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert not str(key).startswith("test"), f"the tuner read {key} (test metrics)"
        return super().get(key, default)


@pytest.fixture
def hidden_test_metrics(monkeypatch):
    """pipeline.train as usual, but its summaries hold no test metrics (and refuse to be asked for them)."""
    real = pipeline.train
    calls = []

    def train(cfg, **kwargs):
        calls.append(cfg.train.seed)
        summary = real(cfg, **kwargs)
        return NoTestMetrics({k: v for k, v in summary.items() if not k.startswith("test")})

    monkeypatch.setattr(pipeline, "train", train)
    return calls


def run_cli(capsys, *argv):
    code = main(["tune", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def study_dir(root: Path) -> Path:
    return root / "tune" / "digits-lt-m2m"


def test_study_runs_resumes_and_prints_a_command_that_reproduces_the_best_trial(tmp_path, capsys, hidden_test_metrics):
    root = tmp_path / "runs"
    args = ["digits-lt", *TINY, "m2m.lam=0.05:0.5", "m2m.steps=2,3", "--seeds", "1", "--root", str(root)]
    code, out, err = run_cli(capsys, *args, "--trials", "2")
    assert code == 0, err
    assert hidden_test_metrics == [100, 100]  # tuning seed 100, never an evaluation seed
    assert out.count("] trial ") == 2 and "acceptance" in out
    best = json.loads((study_dir(root) / "best.json").read_text())
    declared = REBALANCERS.get("m2m").search_space  # M2m's own search space
    spaces = {k.key: tune.Param.from_knob(k) for k in declared if k.key != "m2m.lam"}
    spaces["m2m.lam"] = tune.Param("m2m.lam", "float", 0.05, 0.5)
    spaces["m2m.steps"] = tune.Param("m2m.steps", "choice", choices=(2, 3))
    assert set(best["knobs"]) == set(spaces)
    assert all(spaces[k].contains(v) for k, v in best["knobs"].items()), best["knobs"]
    assert 0 < best["val_bacc_mean"] <= 1 and best["seeds"] == [100]

    # the printed command trains exactly the best trial's configuration (seed 0 instead of 100)
    command = best["commands"]["train"]
    assert command in out
    words = shlex.split(command)
    assert words[:3] == ["m2m", "train", "digits-lt"]
    cfg = load_config(words[2], words[3:])
    assert {k: tune._get(cfg, k) for k in best["knobs"]} == best["knobs"]
    trained = read_yaml(Path(best["run_dirs"][0]) / "config.yaml")
    assert differing_settings(trained, cfg.to_dict(), ignore=["train.seed"]) == []
    assert cfg.train.seed == 0 and cfg.run.dir == str(study_dir(root) / f"best-trial{best['trial']}" / "seed0")
    words = shlex.split(best["commands"]["reproduce"])
    assert words[:8] == ["m2m", "reproduce", "--recipe", "digits-lt", "--methods", "drs,m2m", "--seeds", "3"]
    evaluated = load_config("digits-lt", [*words[10:], "method=m2m", "train.seed=0", f"run.dir={cfg.run.dir}"])
    assert differing_settings(evaluated.to_dict(), cfg.to_dict()) == []  # the grid's M2m cells = the train command

    # the same study continues: finished trials are reused, not trained again
    summary = study_dir(root) / "trial0" / "seed100" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    code, out, err = run_cli(capsys, *args, "--trials", "3")
    assert code == 0, err
    assert "2 of 3 trials finished already" in out and out.count("] trial ") == 1
    assert summary.stat().st_mtime_ns == stamp
    assert json.loads((study_dir(root) / "best.json").read_text())["trials"] == {"complete": 3}
    assert len((study_dir(root) / "trials.csv").read_text().splitlines()) == 1 + 3

    # ... and only with the settings it was started with
    code, _, err = run_cli(capsys, *args[:-4], "--seeds", "2", "--root", str(root))
    assert code == 2 and "was started with other settings" in err and "seeds [100] there" in err


@pytest.mark.slow  # a study interrupted and run again; a study that runs and resumes is checked above
def test_an_interrupted_trial_is_retried_in_its_directory(tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    args = ["digits-lt", *TINY, "--trials", "1", "--seeds", "2", "--root", str(root)]
    real = pipeline.train

    def interrupted(cfg, **kwargs):
        if cfg.train.seed == 101:
            raise KeyboardInterrupt
        return real(cfg, **kwargs)

    monkeypatch.setattr(pipeline, "train", interrupted)
    assert main(["tune", *args]) == 130
    first = study_dir(root) / "trial0" / "seed100" / "summary.json"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(pipeline, "train", real)
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "1 interrupted trial(s) queued again" in out
    best = json.loads((study_dir(root) / "best.json").read_text())
    assert best["trial"] == 1 and best["run_dirs"][0] == str(first.parent)  # same knobs, same directory
    assert best["trials"] == {"complete": 1, "interrupted": 1}
    assert first.stat().st_mtime_ns == stamp  # seed 100 was not trained again
    assert (study_dir(root) / "trial0" / "seed101" / "summary.json").exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        (["m2m.bta=0.5:0.9"], "unknown config key 'm2m.bta'. Did you mean 'm2m.beta'?"),
        (["m2m.beta=0.5:1.5"], "m2m.beta=1.5 must be in [0, 1)"),
        (["m2m.beta=0.9,abc"], "m2m.beta='abc' must be a number"),
        (["optim.lr=0.2:0.01"], "LOW must be below HIGH"),
        (["optim.lr=a:b"], "must be LOW:HIGH with two numbers"),
        (["m2m.steps=2.5:6"], "m2m.steps is an integer"),
        (["train.eval_batch_size=256:1024"], "does not change a run's result"),
        (["m2m.beta=0.9,0.9"], "two or more different values"),
        (["train.seed=5"], "set by m2m tune itself"),
        (["--trials", "0"], "--trials 0 must be >= 1"),
        (["--seeds", "0,1"], "tuning seeds must be >= 100"),
        (["--method", "drs"], "nothing to search: method drs has no default search space"),
    ],
)
def test_bad_requests_are_refused_in_one_line_before_anything_trains(tmp_path, capsys, bad, message):
    root = tmp_path / "runs"
    code, out, err = run_cli(capsys, "digits-lt", *TINY, *bad, "--root", str(root))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not root.exists()


def test_ranges_choices_and_fixed_values_are_told_apart_by_the_config():
    base = [*TINY, "method=m2m"]
    assert tune.classify("optim.milestones=[3]")[0] == "fixed"
    assert tune.classify("data.root=/data/a:b,c")[0] == "fixed"  # a path, not a range or a choice
    assert tune.classify("model.hidden=128,256")[0] == "fixed"  # a list value
    assert tune.parse_param("digits-lt", base, "optim.lr=0.01:0.2") == tune.Param("optim.lr", "float", 0.01, 0.2, True)
    assert tune.parse_param("digits-lt", base, "optim.lr=0.05:0.2").log is False
    assert tune.parse_param("digits-lt", base, "m2m.steps=5:20") == tune.Param("m2m.steps", "int", 5, 20)
    assert tune.parse_param("digits-lt", base, "m2m.beta=0.9,0.99").choices == (0.9, 0.99)
    assert tune.parse_seeds("3") == [100, 101, 102] and tune.parse_seeds("100,107") == [100, 107]
    spec = tune.build_spec("digits-lt", ["m2m.beta=0.99", "optim.lr=0.01:0.2"], root="r")
    assert spec.keys == ["m2m.lam", "m2m.gamma", "m2m.step_size", "optim.lr"]  # beta fixed, steps the recipe's
    assert spec.dir == Path("r/tune/digits-lt-m2m")


class FakeTrial:
    """Just enough of optuna.Trial for :func:`major2minor.tune.run_trial`."""

    number = 0

    def __init__(self, prune: bool):
        self.prune, self.user_attrs, self.reports = prune, {}, []

    def suggest_categorical(self, name, choices):
        return choices[0]

    def suggest_float(self, name, low, high, log=False):
        return 0.123456

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune


def test_pruning_stops_a_bad_trial_between_seeds_but_never_after_the_last(tmp_path, monkeypatch):
    import optuna

    scores = iter([0.5, 0.7, 0.6, 0.4, 0.9])
    monkeypatch.setattr(
        pipeline, "train", lambda cfg, **kw: {"val_at_best": {"bacc": next(scores)}, "best_epoch": 3, "m2m": {}}
    )
    spec = tune.build_spec("digits-lt", TINY, seeds=2, root=tmp_path)
    trial = FakeTrial(prune=True)
    with pytest.raises(optuna.TrialPruned):
        tune.run_trial(spec, trial)
    assert trial.reports == [(0, 0.5)] and trial.user_attrs["val_bacc"] == [0.5]
    assert trial.user_attrs["knobs"]["m2m.lam"] == 0.123  # rounded to 3 significant digits
    spec.seeds = [100]
    assert tune.run_trial(spec, FakeTrial(prune=True)) == 0.7  # one seed: nothing to prune before the last
    spec.seeds = [100, 101, 102]
    assert tune.run_trial(spec, FakeTrial(prune=False)) == pytest.approx((0.6 + 0.4 + 0.9) / 3)


def test_only_validation_scores_are_read_from_a_summary():
    seen = tune.validation_view(
        NoTestMetrics({"val_at_best": {"bacc": 0.8}, "best_epoch": 7, "rebalance": "m2m", "m2m": {"acceptance": 0.2}})
    )
    assert seen == {"val_bacc": 0.8, "best_epoch": 7, "acceptance": 0.2}
    source = Path(tune.__file__).read_text()
    assert "test_at" not in source and "test_per" not in source


def test_equal_means_are_a_tie_won_by_the_earliest_trial():
    import optuna

    study = optuna.create_study(direction="maximize")
    for value in (0.8677777777777779, 0.867777777777778, 0.5):  # equal means, summed in another order
        study.add_trial(optuna.trial.create_trial(value=value))
    assert tune.best_trial(study).number == 0
