"""What the redrawn figures show: inspected on the matplotlib Figure objects, not by eye.

Acceptance axis scaled to the data, best-validation star at the engine's epoch, T0 line between T0 and
T0+1 with its label, mean ± std bands over seeds, identical lines named in the legend, plain tick
numbers and the legend outside the axes in the per-class recall figure.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from major2minor import figures  # noqa: E402
from major2minor.display import percent  # noqa: E402
from major2minor.figures import (  # noqa: E402
    acceptance_ylim,
    best_val_epoch,
    identical_stretch,
    log_ticks,
    overall_acceptance,
    per_class_recall_figure,
    plot_training_curves,
    training_curves_figure,
)
from major2minor.rundir import run_figure_inputs, write_run_figures  # noqa: E402


def make_log(val, loss=None, acceptance=None, best_epoch=None, slots=1000):
    """Log rows as read_log returns them (floats, epochs from 1)."""
    rows = []
    for i, v in enumerate(val):
        e = i + 1
        row = {"epoch": float(e), "train_loss": float(loss[i] if loss is not None else 2.0 / e), "val_bacc": float(v)}
        row["val_gm"] = float(v) * 0.9
        if best_epoch is not None:
            row["best_epoch"] = float(best_epoch[i])
        if acceptance is not None and acceptance[i] is not None:
            row.update(m2m_acceptance=acceptance[i], m2m_slots=float(slots), m2m_accepted=float(acceptance[i] * slots))
        rows.append(row)
    return rows


def legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


# ----------------------------------------------------------------------------------------------
# training curves


def test_acceptance_axis_follows_the_data_and_shows_the_overall_rate():
    assert acceptance_ylim([0.1, 0.38]) == (0.0, 0.5)  # tiny rates: at least 0.5% of range
    assert acceptance_ylim([12.0, 20.0])[1] == pytest.approx(23.0)  # 15% above the largest value
    assert acceptance_ylim([99.0])[1] <= 105.0
    assert acceptance_ylim([]) == (0.0, 0.5)
    acc = [None, None, 0.002, 0.004, 0.006]  # fractions: 0.2% .. 0.6%
    rows = make_log([0.2, 0.3, 0.4, 0.5, 0.45], acceptance=acc)
    assert overall_acceptance([rows]) == pytest.approx(0.004)
    fig = training_curves_figure(rows, deferred_epoch=2)
    ax_acc = fig.axes[2]
    bottom, top = ax_acc.get_ylim()
    assert bottom == 0.0 and 0.6 < top < 1.0, top  # not a fixed 0-100% axis: 0.6% stays readable
    line = next(ln for ln in ax_acc.lines if ln.get_gid() != "t0")
    assert list(line.get_ydata()) == pytest.approx([0.2, 0.4, 0.6])  # in %
    box = by_gid(ax_acc, "acceptance-mean")
    assert box and percent(0.004) in box[0].get_text()  # the run's accepted / slots, as display.percent shows it
    big = training_curves_figure(make_log([0.2, 0.3, 0.4], acceptance=[None, 0.1, 0.2]))
    assert big.axes[2].get_ylim()[1] == pytest.approx(23.0)


def test_best_epoch_star_is_the_engines_epoch():
    ties = [0.3, 0.5, 0.5, 0.4]  # the engine keeps the LAST of equal best values (val >= best)
    assert best_val_epoch([make_log(ties)]) == 3
    assert best_val_epoch([make_log(ties, best_epoch=[1, 2, 3, 3])]) == 3
    assert best_val_epoch([make_log(ties, best_epoch=[1, 2, 2, 2])]) == 2  # the logged column wins
    fig = training_curves_figure(make_log(ties))
    stars = by_gid(fig.axes[1], "best-epoch")
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [3] and list(stars[0].get_ydata()) == [50.0]
    assert "best val epoch 3 (val bACC 50.00%)" in legend_texts(fig)
    # several seeds: the last maximum of the mean curve, and its number in the method's legend entry
    seeds = [make_log([0.3, 0.6, 0.5, 0.5]), make_log([0.3, 0.4, 0.7, 0.7])]
    assert best_val_epoch(seeds) == 4  # means 0.3, 0.5, 0.6, 0.6
    fig = training_curves_figure({"ERM": seeds, "M2m": [make_log([0.1, 0.9, 0.2, 0.1])]})
    xs = sorted(int(s.get_xdata()[0]) for s in by_gid(fig.axes[1], "best-epoch"))
    assert xs == [2, 4]
    texts = legend_texts(fig)
    assert "ERM, best val epoch 4" in texts and "M2m, best val epoch 2" in texts


def test_t0_line_sits_between_t0_and_t0_plus_1_with_its_label():
    rows = make_log([0.2, 0.3, 0.4, 0.5, 0.45], acceptance=[None, None, 0.1, 0.2, 0.1])
    fig = training_curves_figure(rows, deferred_epoch=2)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        (line,) = by_gid(ax, "t0")
        assert list(line.get_xdata()) == [2.5, 2.5]
    assert "T0 = 2: re-balancing from epoch 3" in legend_texts(fig)
    assert not any(by_gid(ax, "t0") for ax in training_curves_figure(rows).axes)  # no T0 given: no line


def test_seeds_are_drawn_as_mean_with_a_std_band():
    a, b = make_log([0.2, 0.4, 0.6]), make_log([0.4, 0.6, 0.8])
    fig = training_curves_figure({"ERM": [a, b], "LDAM": [make_log([0.1, 0.1, 0.1])] * 2})
    bands = by_gid(fig.axes[1], "band")[:1]
    assert bands and type(bands[0]).__name__ in ("PolyCollection", "FillBetweenPolyCollection")
    ys = bands[0].get_paths()[0].vertices[:, 1]
    std = np.std([20, 40], ddof=1)  # sample std over the two seeds, in %
    assert ys.max() == pytest.approx(70 + std) and ys.min() == pytest.approx(30 - std)
    mean_line = next(ln for ln in fig.axes[1].lines if ln.get_gid() not in ("best-epoch",))
    assert list(mean_line.get_ydata()) == pytest.approx([30.0, 50.0, 70.0])
    assert "shaded: ± 1 std over 2 seeds" in legend_texts(fig)
    assert len(by_gid(fig.axes[0], "band")) == 2  # the loss panel too, one band per method
    single = training_curves_figure({"ERM": [a], "LDAM": [b]})
    assert not by_gid(single.axes[1], "band")


def test_identical_lines_are_detected_and_named():
    erm = [make_log([0.2, 0.4, 0.5, 0.6], loss=[2, 1, 0.5, 0.3])]
    drs = [make_log([0.2, 0.4, 0.45, 0.7], loss=[2, 1, 0.8, 0.5])]  # equal to ERM up to epoch 2 (T0 = 2)
    ldam = [make_log([0.3, 0.5, 0.6, 0.6], loss=[9, 5, 3, 2])]
    ldam_drw = [[dict(r) for r in ldam[0]]]  # equal to LDAM everywhere
    assert identical_stretch(drs, erm) == (2, False)
    assert identical_stretch(ldam_drw, ldam) == (4, True)
    assert identical_stretch(ldam, erm) == (None, False)
    fig = training_curves_figure({"ERM": erm, "DRS": drs, "LDAM": ldam, "LDAM-DRW": ldam_drw}, deferred_epoch=2)
    texts = legend_texts(fig)
    assert any(t.startswith("DRS (= ERM to epoch 2)") for t in texts), texts
    assert any(t.startswith("LDAM-DRW (= LDAM)") for t in texts), texts
    assert any(t.startswith("ERM,") for t in texts) and any(t.startswith("LDAM,") for t in texts)
    dashed = by_gid(fig.axes[1], "identical")  # the hidden stretches, drawn dashed over the other line
    assert sorted(len(ln.get_xdata()) for ln in dashed) == [2, 4]
    assert all(ln.get_linestyle() == "--" for ln in dashed)


def test_lines_identical_to_the_same_line_get_offset_dashes():
    erm = [make_log([0.2, 0.4, 0.5])]
    fig = training_curves_figure({"ERM": erm, "DRS": [list(erm[0])], "M2m": [list(erm[0])]})
    texts = legend_texts(fig)
    assert any(t.startswith("DRS (= ERM)") for t in texts) and any(t.startswith("M2m (= ERM)") for t in texts)
    offsets = sorted(ln._unscaled_dash_pattern[0] for ln in by_gid(fig.axes[1], "identical"))
    assert offsets[0] != offsets[1]  # each colour shows in turn


def test_plot_training_curves_still_writes_a_png(tmp_path):
    out = plot_training_curves(make_log([0.2, 0.3]), tmp_path / "c.png", deferred_epoch=0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="must end in .png"):
        plot_training_curves(make_log([0.2, 0.3]), tmp_path / "c.svg")


# ----------------------------------------------------------------------------------------------
# per-class recall


def test_per_class_recall_has_plain_ticks_percent_and_the_legend_outside():
    counts = [90, 64, 46, 33, 23, 17, 12, 8, 6, 4]
    assert log_ticks(4, 90) == [5, 10, 20, 50]
    rec = {"ERM": list(np.linspace(0.9, 0.3, 10)), "LDAM": list(np.linspace(0.95, 0.5, 10))}
    rec["LDAM-DRW"] = list(rec["LDAM"])
    fig = per_class_recall_figure(rec, counts)
    fig.canvas.draw()
    ax, bars = fig.axes[0], fig.axes[1]
    assert bars.get_yscale() == "log"
    labels = [t.get_text() for t in bars.get_yticklabels() if t.get_text()]
    assert labels == ["5", "10", "20", "50"], labels  # no "2×10¹", no offset text
    assert bars.yaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    assert "%" in ax.get_ylabel() and ax.get_ylim()[1] > 100
    assert max(max(ln.get_ydata()) for ln in ax.lines) == pytest.approx(95.0)  # fractions shown in %
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "0\n90" and ticks[-1] == "9\n4"  # class, then its training samples
    legend = ax.get_legend()
    assert legend.get_window_extent().y0 >= ax.get_window_extent().y1 - 1  # above the axes, not on the bars
    texts = [t.get_text() for t in legend.get_texts()]
    assert "LDAM-DRW (= LDAM)" in texts and "ERM" in texts


def test_class_counts_axis_has_plain_ticks(tmp_path):
    figures.plot_class_counts([90, 64, 4], tmp_path / "c.png")  # smoke: the formatter works on a real draw
    assert log_ticks(50, 5000) == [50, 100, 200, 500, 1000, 2000, 5000]
    assert log_ticks(1, 5000) == [1, 3, 10, 30, 100, 300, 1000, 3000]  # at most 8 ticks
    assert log_ticks(0.004, 12) == [0.01, 0.03, 0.1, 0.3, 1, 3, 10]
    assert log_ticks(0.004, 12, max_ticks=6) == [0.01, 0.1, 1, 10]
    assert log_ticks(3, 4) == [3, 4]


# ----------------------------------------------------------------------------------------------
# per run


def test_run_figures_use_the_paper_label_and_one_based_epochs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "recipe: digits-lt\nmethod: ldam-drw\nloss:\n  name: ldam\nrebalance:\n  name: drw\n"
        "train:\n  deferred_epoch: 2\n  epochs: 4\n  seed: 1\n"
    )
    rows = make_log([0.2, 0.5, 0.5, 0.4], best_epoch=[1, 2, 3, 3])
    header = list(rows[0])
    (run / "log.csv").write_text(
        ",".join(header) + "\n" + "\n".join(",".join(f"{r[k]:g}" for k in header) for r in rows) + "\n"
    )
    counts = [50, 10, 2]
    (run / "summary.json").write_text(
        json.dumps(
            {
                "method": "ldam-drw",
                "recipe": "digits-lt",
                "seed": 1,
                "best_epoch": 3,
                "train_counts": counts,
                "test_at_best": {"per_class_recall": [0.9, 0.5, 0.1]},
                "test_at_last": {"per_class_recall": [0.8, 0.5, 0.2]},
            }
        )
    )
    info = figures._run_info(run_figure_inputs(run))
    assert info.heading == "LDAM-DRW · digits-lt · seed 1" and info.t0 == 2 and info.epochs == 4
    assert [p.name for p in write_run_figures(run)] == ["class_counts.png", "curves.png", "per_class_recall.png"]
    assert figures.method_label("erm") == "ERM" and figures.method_label("m2m") == "M2m"
    assert figures.method_label(None, "ce", "drs") == "CE / DRS"
