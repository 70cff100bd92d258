import csv
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from gradkit import explorer, plots, sweeps
from gradkit.data import synthetic
from gradkit.explorer import ThresholdExplorer
from gradkit.sweeps import describe_method, describe_setting, sweep_table

from .test_plots import legends_off_the_data
from gradkit.runs import load_sweep, sweep
from gradkit.train import History

NORMS = [0.01, 0.1, 1.0]
VALUES = [0.001, 0.01]
BASE = {"model": "seed_cnn", "model_kw": {"width": 0.125}, "epochs": 1, "batch_size": 32, "lr": 0.05,
        "monitor_every": 1}


@pytest.fixture(scope="module")
def data():
    return synthetic(n=96, n_test=48, seed=1, n_val=32)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, data):
    """Two seeds x (no clipping + norm at 3 thresholds + value at 2), 3 steps each, in a temp folder."""
    folder = tmp_path_factory.mktemp("sweep")
    configs = [{**BASE, "seed": s, "clip": clip} for s in (0, 1)
               for clip in ["none"] + [f"norm:{c:g}" for c in NORMS] + [f"value:{c:g}" for c in VALUES]]
    sweep(configs=configs, data=data, results_dir=folder, progress=False)
    return folder


def find(runs, clip, seed=0):
    """The run with that clip spec (compared as (method, threshold)) and seed."""
    want = sweeps.split_spec(clip)
    [h] = [h for h in runs if sweeps.split_spec(h.config["clip"]) == want and h.config["seed"] == seed]
    return h


@pytest.fixture
def ex(tiny_sweep):
    return ThresholdExplorer(load_sweep(tiny_sweep))


def test_views_follow_the_threshold_slider_to_the_matching_run(ex, tiny_sweep):
    runs = load_sweep(tiny_sweep)
    assert ex.views["method"] == "norm" and ex.views["threshold"] == 0.1  # the middle one to start
    ex.select(threshold=0.9)  # snaps to 1 on the log scale
    v = ex.views
    run = find(runs, "norm:1")
    assert v["threshold"] == 1.0 and v["run_id"] == run.config["run_id"]
    np.testing.assert_array_equal(v["loss"], run.loss)
    np.testing.assert_array_equal(v["norms"], run.grad_norm_before)
    assert v["baseline_id"] == find(runs, "none").config["run_id"]
    assert v["run_ids"] == [find(runs, "norm:1", s).config["run_id"] for s in (0, 1)]
    assert v["clipped_share"] == pytest.approx(np.mean(run.clipped))
    assert v["threshold_line"] == 1.0

    ex.select(threshold=0.02)  # log10 distance 0.3 to 0.01, 0.7 to 0.1
    small = find(runs, "norm:0.01")
    assert ex.views["threshold"] == 0.01 and ex.views["run_id"] == small.config["run_id"]
    # Norm clipping at c scales every clipped step to norm c: factor = c / ||g||.
    assert all(small.clipped)
    np.testing.assert_allclose(ex.views["step_factor"], 0.01 / np.asarray(small.grad_norm_before), rtol=1e-3)


def test_views_follow_the_method_and_the_no_clipping_box(ex, tiny_sweep):
    runs = load_sweep(tiny_sweep)
    before = ex.views["run_id"]
    ex.controls["method"].value = "value"
    v = ex.views
    assert v["method"] == "value" and v["threshold"] in VALUES and v["run_id"] != before
    assert v["run_id"] == find(runs, f"value:{v['threshold']:g}").config["run_id"]
    assert v["threshold_line"] is None  # value clipping's c is per element, not on the ||g|| axis
    ex.select(threshold=50.0)
    assert ex.views["threshold"] == 0.01
    ex.controls["no_clip"].value = True
    assert ex.views["method"] == "none" and ex.views["run_id"] == ex.views["baseline_id"]
    np.testing.assert_array_equal(ex.views["loss"], find(runs, "none").loss)


def test_accuracy_view_is_the_seed_mean_per_threshold_on_validation(ex, tiny_sweep):
    runs = load_sweep(tiny_sweep)
    assert list(ex.views["accuracy"]) == ["norm"]  # one method: thresholds of others live on other scales
    thresholds, accs = ex.views["accuracy"]["norm"]
    assert thresholds == NORMS
    for t, acc in zip(thresholds, accs):
        assert acc == [find(runs, f"norm:{t:g}", s).val_acc[-1] for s in (0, 1)]
    assert ex.views["baseline_accuracy"] == [find(runs, "none", s).val_acc[-1] for s in (0, 1)]
    t, mean = ex.views["selected_accuracy"]
    assert t == 0.1 and mean == pytest.approx(np.mean(accs[1]))
    assert ex.views["median_norm"] == pytest.approx(np.median(find(runs, "none").grad_norm_before))


def test_update_ratio_view_has_one_column_per_layer(ex):
    v = ex.views
    assert v["update_ratio"].shape == (3, len(v["layer_names"])) == v["baseline_update_ratio"].shape
    assert "fc2.weight" in v["layer_names"] and np.all(v["update_ratio"] > 0)


def test_setting_missing_from_the_sweep_is_reported(ex):
    ex.controls["model"].value = sweeps.model_label("resnet", explorer.LIVE_MODELS["resnet"])
    assert ex.views["available"] is False and ex.views["setting"] is None
    with pytest.raises(ValueError, match="no run in the sweep"):
        ex.draw()


def test_draw_and_static_figures(ex):
    fig = ex.draw()
    assert len(fig.axes) == 6
    loss_ax = fig.axes[0]
    np.testing.assert_allclose(loss_ax.lines[-1].get_ydata(), plots.running_mean(ex.views["loss"], 20))
    steps = {ln.get_label(): ln.get_ydata() for ln in fig.axes[3].lines}
    run = ex.index.runs[ex.views["run_id"]]
    np.testing.assert_allclose(steps["norm clipping, c=0.1"], plots.running_mean(run.step_norm, 10))
    np.testing.assert_allclose(steps["lr*c/(1-m), m=0.9"], np.asarray(run.lr) * 0.1 / (1 - 0.9))
    # no legend on any panel's data (the step panel's sat on the curves, the per-epoch one on the 10% line)
    assert legends_off_the_data(fig) == []
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [ln.get_label() for ln in loss_ax.lines]
    figs = ex.static()
    # thresholds 0.01, 0.1, 1: one screen-sized figure of six views each
    assert len(figs) == 3 and all(len(f.axes) == 6 for f in figs)
    assert all(legends_off_the_data(f) == [] for f in figs)
    assert ex.views["threshold"] == 0.1  # drawing the grid leaves the selection alone
    plt.close("all")


def test_matched_learning_rate_run_is_shown_beside_the_clipped_one(tiny_sweep, data):
    runs = load_sweep(tiny_sweep)
    clipped = find(runs, "norm:0.01")
    lr = sweeps.matched_lr(clipped)
    [partner] = sweep(configs=[{**BASE, "seed": 0, "clip": "none", "lr": lr}], data=data, results_dir=tiny_sweep,
                      progress=False)
    links = {clipped.config["run_id"]: partner.config["run_id"]}
    ex = ThresholdExplorer(load_sweep(tiny_sweep), matched=links)
    assert ex.controls["lr"].options == (BASE["lr"],)  # the matched rate is not a setting of its own
    v = ex.select(threshold=0.01)
    assert v["matched_id"] == partner.config["run_id"] and v["matched_lr"] == lr
    np.testing.assert_array_equal(v["matched_loss"], partner.loss)
    assert v["matched_accuracy"] == ([0.01], [[partner.val_acc[-1]]])
    fig = ex.draw()
    label = f"no clipping, lr={sweeps.fmt(lr)} (matched)"
    assert label in [ln.get_label() for ln in fig.axes[0].lines]
    assert label in [ln.get_label() for ln in fig.axes[5].lines]
    assert ex.summary().splitlines()[0].endswith(f"| no clipping at the matched lr {sweeps.fmt(lr)}")
    partner_file = tiny_sweep / f"run-{partner.config['run_id']}.json"
    partner_file.unlink()  # leave the shared sweep as the other tests expect it
    plt.close("all")


def test_live_training_is_added_and_cached(tiny_sweep, data, tmp_path):
    ex = ThresholdExplorer(load_sweep(tiny_sweep), data=data, results_dir=tmp_path)
    ex.select(threshold=0.5)
    assert ex.views["threshold"] == 1.0  # not in the sweep yet: the nearest one is shown
    ex.controls["train"].click()
    [path] = tmp_path.glob("run-*.json")
    h = History.load(path)
    assert sweeps.split_spec(h.config["clip"]) == ("norm", 0.5) and h.config["seed"] == 0 and h.config["lr"] == BASE["lr"]
    assert ex.views["threshold"] == 0.5 and ex.views["run_id"] == h.config["run_id"]
    mtime = path.stat().st_mtime_ns
    again = ex.train_selected()
    assert again.config["run_id"] == h.config["run_id"] and path.stat().st_mtime_ns == mtime
    # A new explorer over the same cache starts with the live run in it.
    assert 0.5 in ThresholdExplorer(load_sweep(tiny_sweep), results_dir=tmp_path).index.thresholds(
        ex.views["setting"], "norm")


def test_train_button_is_off_without_a_cache(ex):
    assert ex.controls["train"].disabled
    with pytest.raises(ValueError, match="results_dir is None"):
        ex.train_selected()


def test_empty_histories_raise():
    with pytest.raises(ValueError, match="histories is empty"):
        ThresholdExplorer([])


def test_sweep_table_and_words_come_from_the_numbers(tiny_sweep):
    runs = load_sweep(tiny_sweep)
    rows = sweep_table(runs)
    assert [(r.method, r.threshold) for r in rows] == [("none", None)] + [("value", c) for c in VALUES] + [
        ("norm", c) for c in NORMS]
    norm = {r.threshold: r for r in rows if r.method == "norm"}
    accs = [find(runs, "norm:0.1", s).test_acc[-1] for s in (0, 1)]
    assert norm[0.1].mean == pytest.approx(np.mean(accs)) and norm[0.1].spread == pytest.approx(max(accs) - min(accs))
    assert norm[0.01].clip_rate == 1.0 and norm[0.01].diverged == 0
    best = max(NORMS, key=lambda c: (norm[c].val_mean, -c))
    base = next(r for r in rows if r.method == "none")
    text = describe_method(rows, "norm")
    if norm[best].val_mean - base.val_mean > max(0.01, norm[best].val_spread, base.val_spread):
        assert text.startswith(f"norm clipping: best on validation c={best:g} ({100 * norm[best].val_mean:.1f}%,")
    else:
        assert text.startswith(f"norm clipping: no threshold beat no clipping ({100 * base.val_mean:.1f}% validation")
        assert f"the best on validation was c={best:g} ({100 * norm[best].val_mean:.1f}%," in text
    assert f"its test accuracy: {100 * norm[best].mean:.1f}%" in text
    paragraph = describe_setting(rows)
    assert paragraph.startswith("SeedCNN(width=0.125), sgd lr=0.05, 1 epoch; accuracies are final validation") and text in paragraph
    with pytest.raises(ValueError, match="method='agc' has no runs here"):
        describe_method(rows, "agc")


def test_diverged_run_counts_as_chance():
    h = History(config={"clip": "none", "run_id": "x"}, diverged=True, test_acc=[0.4])
    assert sweeps.final_accuracy(h) == 0.1
    [row] = sweep_table([h])
    assert row.accuracies == [0.1] and row.diverged == 1


def test_running_mean_by_hand():
    np.testing.assert_allclose(plots.running_mean([2.0, 4.0, 6.0, 8.0], 3), [2.0, 3.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        plots.running_mean([1.0], 0)


def test_accuracy_plot_draws_means_in_percent():
    _, ax = plt.subplots()
    plots.accuracy_vs_threshold(ax, {"norm": ([1.0, 0.1], [[0.5, 0.7], [0.2, 0.4]])}, baseline=[0.3, 0.5],
                                selected=(0.1, 0.3))
    line = next(ln for ln in ax.lines if ln.get_label() == "norm clipping")
    np.testing.assert_allclose(line.get_xdata(), [0.1, 1.0])
    np.testing.assert_allclose(line.get_ydata(), [30.0, 60.0])
    star = next(ln for ln in ax.lines if ln.get_label() == "selected")
    assert star.get_ydata()[0] == pytest.approx(30.0)
    plt.close("all")


def test_histogram_counts_finite_positive_norms():
    _, ax = plt.subplots()
    plots.grad_norm_histogram(ax, [0.1, 1.0, 10.0, math.nan, 0.0], threshold=2.0, clipped_share=1 / 3)
    assert sum(p.get_height() for p in ax.patches) == 3
    assert ax.get_title() == "33% of steps clipped"
    plt.close("all")


def test_shipped_sweep_has_the_required_coverage():
    folder = sweeps.SHIPPED_RESULTS
    runs = load_sweep(folder)
    with open(folder / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == len(runs)
    for h in runs:
        assert h.dataset == "CIFAR-10 (JPEG copy)" and not h.synthetic
        assert h.device and h.torch_version and h.date and h.config["run_id"] and h.config["subset"]
        assert h.layer_names and h.update_ratio and h.step_norm and (h.val_acc or h.diverged)
    seed_cnn = [h for h in runs if h.config["model"] == "seed_cnn"]
    assert all(h.config["epochs"] >= 10 and h.config["subset"] >= 10000 for h in seed_cnn)
    assert any(h.config["model"] == "plain_cnn" for h in runs)  # setting C
    # The lr x norm-threshold grid of lesson 04: at least 4 x 6, and no clipping at every rate.
    grid = sweeps.lr_threshold_grid(runs, "norm", seed=0)
    assert len(grid.lrs) >= 4 and len(grid.thresholds) >= 7 and grid.thresholds[0] is None
    assert np.isfinite(grid.acc).all()
    rows = sweep_table(runs)
    for lr in (0.05, 0.2):  # settings A and B: two seeds of every clip setting, three methods
        key = next(r.setting for r in rows if r.label.startswith(f"SeedCNN(width=0.25), sgd lr={lr:g},"))
        mine = [r for r in rows if r.setting == key]
        assert all(len(r.accuracies) == 2 for r in mine) and {r.method for r in mine} >= {"none", "norm", "value", "agc"}
    setting_a = [r for r in rows if r.label.startswith("SeedCNN(width=0.25), sgd lr=0.05,")]
    best = max((r for r in setting_a), key=lambda r: r.val_mean)
    assert max(best.accuracies) > 0.55  # the bar: setting A's chosen run passes 55% test accuracy
    # Every matched-learning-rate run is unclipped, same seed, at lr * the clipped run's mean scale.
    matched = sweeps.load_matched(folder)
    by_id = {h.config["run_id"]: h for h in runs}
    assert matched and all(k in by_id and v in by_id for k, v in matched.items())
    for clipped_id, matched_id in matched.items():
        h, m = by_id[clipped_id], by_id[matched_id]
        assert m.config["clip"] == "none" and m.config["seed"] == h.config["seed"]
        assert m.config["lr"] == pytest.approx(sweeps.matched_lr(h), rel=1e-2)


def test_select_sets_several_controls_and_refreshes_once(ex, tiny_sweep):
    runs = load_sweep(tiny_sweep)
    v = ex.select(model="seed_cnn", method="value", threshold=0.0012)
    assert v["method"] == "value" and v["threshold"] == 0.001
    assert v["run_id"] == find(runs, "value:0.001").config["run_id"]
    v = ex.select(method="norm")  # a new method starts at its middle threshold
    assert v["threshold"] == 0.1
    with pytest.raises(ValueError, match="cannot select \\['seeed'\\]; accepted names: model, optimizer"):
        ex.select(seeed=1)
    with pytest.raises(ValueError, match="model='vgg' is not offered"):
        ex.select(model="vgg")


def test_best_threshold_and_table_text():
    def row(method, c, val, rate, test=0.9):
        return sweeps.SweepRow("k", "s", method, c, [test, test], 0, 2.0, rate, val_accuracies=[val, val], scale=0.5)

    rows = [row("none", None, 0.3, 0.0)] + [
        row("norm", c, a, rate, test=t)
        for c, a, rate, t in [(0.01, 0.10, 1.0, 0.9), (0.1, 0.345, 1.0, 0.9), (1.0, 0.35, 0.5, 0.33), (10.0, 0.30, 0.0, 0.9)]]
    best, near = sweeps.best_threshold(rows, "norm")
    assert (best.threshold, near.threshold) == (1.0, 0.1)
    text = describe_method(rows, "norm")
    assert text == ("norm clipping: best on validation c=1 (35.0%, 50% of steps clipped, +5.0 points vs no clipping); "
                    "its test accuracy: 33.0%. "
                    "The smallest threshold within 1 point of the best: c=0.1 (34.5%, 100% of steps clipped). "
                    "The smallest, c=0.01 (10.0%, 100% of steps clipped), shows what too small a threshold costs: "
                    "every gradient shrunk, learning slowed. The largest, c=10 (30.0%, 0% of steps clipped), ended "
                    "within 1 point of no clipping: so large a threshold stops acting.")
    table = sweeps.format_table(rows).splitlines()
    assert table[1].split() == ["no", "clipping", "30.0", "30.0", "30.0", "0/2", "0/2", "0%", "0.50"]
    assert table[3].split()[-7:] == ["34.5", "34.5", "34.5", "0/2", "0/2", "100%", "0.50"]


def test_sweep_configs_and_bad_methods():
    configs = sweeps.sweep_configs({"model": "seed_cnn", "lr": 0.1}, {"norm": [0.5], "agc": [0.01, 0.1]}, [3, 4])
    assert [(c["seed"], c["clip"]) for c in configs] == [
        (3, "none"), (3, "norm:0.5"), (3, "agc:0.01"), (3, "agc:0.1"),
        (4, "none"), (4, "norm:0.5"), (4, "agc:0.01"), (4, "agc:0.1")]
    with pytest.raises(ValueError, match="method='nrom' is not a clipping method"):
        sweeps.sweep_configs({}, {"nrom": [1.0]}, [0])
    with pytest.raises(ValueError, match=r"thresholds\['norm'\] must be a non-empty list of numbers > 0"):
        sweeps.sweep_configs({}, {"norm": [0.0]}, [0])


def test_run_sweep_reuses_runs_without_writing_to_the_source(tiny_sweep, data, tmp_path):
    before = sorted(p.name for p in tiny_sweep.iterdir())
    configs = [{**BASE, "seed": 0, "clip": "norm:1"}]
    [h] = sweeps.run_sweep(configs, tmp_path / "copy", reuse=tiny_sweep, data=data, progress=False)
    assert h.config["run_id"] == find(load_sweep(tiny_sweep), "norm:1").config["run_id"]
    assert sorted(p.name for p in tiny_sweep.iterdir()) == before
    assert len(list((tmp_path / "copy").glob("run-*.json"))) == len([n for n in before if n.startswith("run-")])


def test_sweep_figure_draws_every_threshold(tiny_sweep):
    runs = load_sweep(tiny_sweep)
    fig = sweeps.sweep_figure([h for h in runs if sweeps.split_spec(h.config["clip"])[0] in ("none", "norm")])
    acc_ax, loss_ax = fig.axes
    line = next(ln for ln in acc_ax.lines if ln.get_label() == "norm clipping")
    np.testing.assert_allclose(line.get_xdata(), NORMS)
    assert len(loss_ax.lines) == len(NORMS) + 1
    plt.close("all")


def test_summary_puts_the_selected_run_beside_the_unclipped_one(ex, tiny_sweep):
    runs = load_sweep(tiny_sweep)
    ex.select(method="norm", threshold=0.01)
    run, base = find(runs, "norm:0.01"), find(runs, "none")
    lines = ex.summary().splitlines()
    assert lines[0].endswith("seed 0: norm clipping, c=0.01 | no clipping")
    assert lines[1].endswith(f": {np.mean(run.loss[-10:]):.3f} | {np.mean(base.loss[-10:]):.3f}")
    scale = np.mean(0.01 / np.asarray(run.grad_norm_before))
    assert lines[3] == f"  steps clipped, mean gradient scale ||g'||/||g||: 100%, scale {scale:.2f} | 0%, scale 1.00"
    assert lines[4].endswith(f"{np.median(run.step_norm):.3g} | {np.median(base.step_norm):.3g}")
    assert lines[6].endswith(f"{100 * run.val_acc[-1]:.1f}% | {100 * base.val_acc[-1]:.1f}%")


def test_slider_reaches_every_threshold_in_the_sweep():
    runs = [History(config={"model": "seed_cnn", "optimizer": "sgd", "lr": 0.1, "clip": clip, "seed": 0, "run_id": clip},
                    test_acc=[0.2]) for clip in ("none", "value:0.0001", "value:0.001")]
    ex = ThresholdExplorer(runs)
    ex.select(method="value")
    assert {1e-4, 1e-3} <= {t for _, t in ex.controls["threshold"].options}
    v = ex.select(threshold=1e-4)
    assert v["threshold"] == 1e-4 and v["run_id"] == "value:0.0001" and v["baseline_id"] == "none"
