"""gradkit.sweeps: choosing on validation, matched learning rates, the lr x threshold grid and the
step actually taken, against hand computations."""

from __future__ import annotations

import dataclasses
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from gradkit import sweeps
from gradkit.sweeps import SweepRow
from gradkit.train import History


def run(lr: float, clip: str, seed: int = 0, val: float = 0.5, test: float = 0.4, before=(2.0, 4.0),
        after=None, **config) -> History:
    """A finished run with hand-set numbers; its id names lr, clip and seed."""
    after = list(before) if after is None else list(after)
    rid = f"{lr:g}-{clip}-{seed}"
    return History(config={"model": "seed_cnn", "optimizer": "sgd", "lr": lr, "clip": clip, "seed": seed,
                           "momentum": 0.9, "run_id": rid, **config},
                   val_acc=[val], test_acc=[test], loss=[2.0, 1.0], grad_norm_before=list(before),
                   grad_norm_after=after, clipped=[a < b for a, b in zip(after, before)])


def test_choice_is_made_on_validation_and_test_is_reported_for_it_only():
    # On test the ranking is the other way round: c=0.1 would win. Validation must decide.
    rows = sweeps.sweep_table([run(0.1, "none", val=0.30, test=0.50), run(0.1, "norm:0.1", val=0.35, test=0.60),
                               run(0.1, "norm:1", val=0.40, test=0.20)])
    best, near = sweeps.best_threshold(rows, "norm")
    assert best.threshold == 1.0 and near.threshold == 1.0
    text = sweeps.describe_method(rows, "norm")
    assert text.startswith("norm clipping: best on validation c=1 (40.0%, 0% of steps clipped, +10.0 points vs "
                           "no clipping); its test accuracy: 20.0%.")
    assert "60.0" not in text and "50.0" not in text  # no test accuracy of a setting not chosen
    assert sweeps.report_choice(rows, "norm") == ("chosen on validation: norm clipping, c=1 (validation 40.0%); "
                                                  "test accuracy 20.0% (per seed: 20.0)")
    table = sweeps.format_table(rows)
    assert "s/run" not in table and "60.0" not in table
    assert table.splitlines()[2].split() == ["norm", "clipping,", "c=0.1", "35.0", "35.0", "0/1", "0/1", "0%", "1.00"]


def test_runs_without_validation_cannot_be_chosen_from():
    h = run(0.1, "norm:1")
    h.val_acc = []
    [row] = sweeps.sweep_table([h])
    assert math.isnan(row.val_mean)
    with pytest.raises(ValueError, match="have no validation accuracy"):
        sweeps.best_threshold([row], "norm")


def test_a_diverged_run_counts_as_chance_on_validation_too():
    h = run(0.1, "none", val=0.9)
    h.diverged = True
    assert sweeps.final_val_accuracy(h) == sweeps.CHANCE


def test_mean_scale_and_matched_lr_by_hand():
    # Scales 1/2 and 1/4 (the zero-norm step is left out): mean 0.375; lr 0.2 * 0.375 = 0.075.
    h = run(0.2, "norm:1", before=(2.0, 4.0, 0.0), after=(1.0, 1.0, 0.0))
    assert sweeps.mean_scale(h) == pytest.approx(0.375)
    assert sweeps.matched_lr(h) == 0.075
    assert sweeps.matched_lr(run(0.05, "norm:1", before=(3.0,), after=(1.0,))) == 0.0167  # 3 digits


def test_matched_rows_pair_each_clipped_run_with_its_matched_run(tmp_path):
    runs = [run(0.2, "norm:0.5", seed=s, val=v) for s, v in [(0, 0.50), (1, 0.52)]]
    runs += [run(0.2, "norm:5", seed=s, val=v) for s, v in [(0, 0.45), (1, 0.47)]]
    runs += [run(0.05, "none", seed=0, val=0.495), run(0.049, "none", seed=1, val=0.505),
             run(0.15, "none", seed=0, val=0.11), run(0.16, "none", seed=1, val=0.12)]
    links = {"0.2-norm:0.5-0": "0.05-none-0", "0.2-norm:0.5-1": "0.049-none-1",
             "0.2-norm:5-0": "0.15-none-0", "0.2-norm:5-1": "0.16-none-1"}
    (tmp_path / "matched.json").write_text(json.dumps(links))
    assert sweeps.load_matched(tmp_path) == links and sweeps.load_matched(tmp_path / "nowhere") == {}
    small, large = sweeps.matched_rows(runs, links)
    assert (small.threshold, small.clipped, small.matched, small.lrs) == (0.5, [0.50, 0.52], [0.495, 0.505], [0.05, 0.049])
    # 0.51 - 0.50 = 0.01 is within the seed spread (0.02): a smaller learning rate does the same.
    assert small.difference == pytest.approx(0.01) and small.noise == pytest.approx(0.02)
    assert small.verdict() == "like a smaller lr"
    assert large.difference == pytest.approx(0.46 - 0.115) and large.verdict() == "better than a smaller lr"
    text = sweeps.describe_matched([small, large])
    assert ("no different from a smaller learning rate (within the seed spread or 1 point): norm clipping c=0.5 "
            "(51.0% vs 50.0% unclipped at lr 0.05/0.049, mean scale 1.00)") in text
    assert "so more than a smaller learning rate: norm clipping c=5 (46.0% vs 11.5% unclipped at lr 0.15/0.16" in text
    assert sweeps.describe_matched([]) == "No clipped run of this setting has a matched-learning-rate run."
    other = dataclasses.replace(large, setting="another", label="SeedCNN(width=0.25), sgd lr=0.05, 10 epochs")
    with pytest.raises(ValueError, match="one setting.*lr=0.05"):
        sweeps.describe_matched([small, other])


def test_lr_threshold_grid_leaves_out_matched_only_rates():
    runs = [run(lr, clip, val=0.1 * i + 0.01 * j)
            for i, lr in enumerate((0.01, 0.1)) for j, clip in enumerate(("none", "norm:0.5", "norm:2"))]
    runs += [run(0.033, "none", val=0.9), run(0.1, "norm:0.5", seed=1, val=0.99), run(0.1, "value:0.01", val=0.99)]
    runs += [run(0.1, "norm:0.5", val=0.99, model_kw={"width": 1.0})]  # another setting
    grid = sweeps.lr_threshold_grid(runs, "norm", seed=0)
    assert grid.lrs == [0.01, 0.1] and grid.thresholds == [None, 0.5, 2.0]
    np.testing.assert_allclose(grid.acc, [[0.0, 0.01, 0.02], [0.1, 0.11, 0.12]])
    assert grid.run_ids[1][2] == "0.1-norm:2-0" and grid.best() == (0.1, 2.0, pytest.approx(0.12))
    fig = sweeps.grid_figure(grid)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.0", "1.0", "2.0", "10.0", "11.0", "12.0"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["none", "c=0.5", "c=2"]
    plt.close("all")
    with pytest.raises(ValueError, match="no run of method='agc' with seed=0"):
        sweeps.lr_threshold_grid(runs, "agc")


def test_step_bound_by_hand_and_against_sgd_with_momentum():
    # v_t = m v_{t-1} + g_t with ||g_t|| = c, all in one direction: the bound is reached exactly.
    lr, c, m = 0.1, 0.5, 0.9
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=m)
    steps = []
    for _ in range(30):
        before = w.detach().clone()
        w.grad = torch.tensor([0.0, 3.0, 4.0]) / 5 * c  # norm c
        opt.step()
        steps.append(float((w.detach() - before).norm()))
    bound = sweeps.step_bound(lr, c, m, steps=30)
    np.testing.assert_allclose(steps, bound, rtol=1e-5)
    assert bound[0] == pytest.approx(lr * c) and bound[-1] > 9 * lr * c and bound[-1] < lr * c / (1 - m)
    np.testing.assert_allclose(sweeps.step_bound([0.1, 0.2], 1.0, 0.5), [0.1, 0.2 * 1.5])
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\)"):
        sweeps.step_bound(0.1, 1.0, 1.0, steps=2)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        sweeps.step_bound(0.1, 1.0, 0.9)


def test_draw_step_sizes_draws_the_runs_and_both_bounds():
    h = run(0.1, "norm:0.5")
    h.step_norm, h.lr = [0.05, 0.09, 0.12], [0.1, 0.1, 0.1]
    _, ax = plt.subplots()
    sweeps.draw_step_sizes(ax, {"clipped": h}, threshold=0.5, window=1)
    lines = {ln.get_label(): ln.get_ydata() for ln in ax.lines}
    np.testing.assert_allclose(lines["clipped"], [0.05, 0.09, 0.12])
    np.testing.assert_allclose(lines["lr*c (c=0.5)"], [0.05] * 3)
    np.testing.assert_allclose(lines["lr*c/(1-m), m=0.9"], [0.5] * 3)
    plt.close("all")


def test_zero_gradient_share_and_formatting():
    h = History(layer_grad_norm=[[0.1, 0.2, 0.3], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(sweeps.zero_gradient_share(h), [0.0, 2 / 3, 1.0])
    assert sweeps.fmt(1.99526) == "2" and sweeps.fmt(0.011749) == "0.0117"
    assert sweeps.setting_label({"model": "seed_cnn", "lr": 0.011749}).endswith("lr=0.0117, 1 epoch")


def test_unstable_runs_are_shown_apart_from_healthy_ones():
    # loss 2.3 -> 40 (above 10 x the first step's) and back: finite, so not diverged, but unstable
    blown = run(0.2, "norm:5", val=0.3)
    blown.loss = [2.3, 40.0, 2.0]
    calm = run(0.2, "norm:5", seed=1, val=0.32)
    assert blown.status == "unstable" and calm.status == "ok"
    rows = sweeps.sweep_table([run(0.2, "none", val=0.3), blown, calm])
    row = next(r for r in rows if r.method == "norm")
    assert (row.diverged, row.unstable) == (0, 1)
    lines = sweeps.format_table(rows).splitlines()
    assert lines[0].split()[6:8] == ["diverged", "unstable"]
    assert lines[2].split() == ["norm", "clipping,", "c=5", "31.0", "30.0", "32.0", "0/2", "1/2", "!", "0%", "1.00"]
    assert lines[1].split() == ["no", "clipping", "30.0", "30.0", "0/1", "0/1", "0%", "1.00"]
    assert "Unstable runs (finite loss that blew up past 10 times its first value) at c = 5 (1/2)." in \
        sweeps.describe_method(rows, "norm")


def test_a_threshold_that_clips_every_step_is_called_a_smaller_lr_only_against_its_matched_run():
    # c = 0.1 clips every step (before 2, 4 > 0.1); validation 50% for the clipped run
    rows = sweeps.sweep_table([run(0.2, "none", val=0.2), run(0.2, "norm:0.1", val=0.5, after=(0.1, 0.1))])
    alone = sweeps.describe_method(rows, "norm")
    assert "much like a smaller learning rate" not in alone
    assert "was not measured here (no unclipped run at its matched learning rate)" in alone
    for matched_val, words in [(0.495, "ended alike, 49.5% vs 50.0% on validation: here clipping acted as a smaller "
                                       "learning rate."),
                               (0.30, "ended lower, 30.0% vs 50.0% on validation: clipping did more than a smaller "
                                      "learning rate here."),
                               (0.60, "ended higher, 60.0% vs 50.0% on validation: a smaller learning rate alone did "
                                      "better here.")]:
        runs = [run(0.2, "none", val=0.2), run(0.2, "norm:0.1", val=0.5, after=(0.1, 0.1)),
                run(0.00750, "none", val=matched_val)]
        pairs = sweeps.matched_rows(runs, {"0.2-norm:0.1-0": "0.0075-none-0"})
        text = sweeps.describe_setting(sweeps.sweep_table(runs[:2]), matched=pairs)
        assert "The unclipped run at its matched learning rate (lr 0.0075, 1 seed) " + words in text


@pytest.fixture(scope="module")
def shipped_runs():
    from gradkit.runs import load_sweep

    folder = sweeps.SHIPPED_RESULTS
    if not (folder / "summary.csv").is_file():
        pytest.skip("the shipped sweep (results/) is not here")
    return folder, load_sweep(folder)


def _setting(runs, model, lr=None):
    """The rows of sweep_table for one shipped setting: ``model`` (and ``lr``), unclipped seed 0 as the key."""
    key = next(sweeps.setting_key(h.config) for h in runs if h.config["model"] == model and h.config["clip"] == "none"
               and (lr is None or h.config["lr"] == lr))
    return [r for r in sweeps.sweep_table(runs) if r.setting == key]


def test_the_shipped_sweep_meets_the_bar(shipped_runs):
    """Issue 10's bar, read from results/: setting A learns, setting B is rescued by clipping, and every clipped
    seed-0 run of settings A, B and C that shrank its gradients has its matched-learning-rate run."""
    import csv

    folder, runs = shipped_runs
    # Setting A (SeedCNN, lr 0.05): the run best on validation passes 55% test accuracy after >= 10 epochs.
    a = [h for h in runs if h.config["model"] == "seed_cnn" and h.config["lr"] == 0.05]
    best_a = max(a, key=lambda h: h.final_val_acc or 0.0)
    assert best_a.config["epochs"] >= 10 and best_a.config["subset"] >= 10000 and best_a.final_test_acc > 0.55
    # Setting B (lr 0.2): the best clipped row beats no clipping by far more than either's seed spread.
    rows_b = _setting(runs, "seed_cnn", 0.2)
    base = next(r for r in rows_b if r.method == "none")
    best_b = max((r for r in rows_b if r.method != "none"), key=lambda r: r.val_mean)
    assert len(base.val_accuracies) >= 2 and len(best_b.val_accuracies) >= 2
    assert best_b.val_mean - base.val_mean > max(0.2, 3 * max(base.val_spread, best_b.val_spread))
    # Matched runs: for every clipped seed-0 run of A, B (SeedCNN at 0.05, 0.2) and C (the PlainCNN) with mean
    # scale <= 0.95, an unclipped run at lr * mean scale, otherwise the same config.
    matched = sweeps.load_matched(folder)
    by_id = {sweeps.run_id(h): h for h in runs}
    clipped = [h for h in runs if h.config["clip"] != "none" and h.config["seed"] == 0
               and (h.config["model"] == "plain_cnn" or h.config["lr"] in (0.05, 0.2))]
    needs = [h for h in clipped if sweeps.mean_scale(h) <= 0.95]
    assert {h.config["model"] for h in needs} == {"seed_cnn", "plain_cnn"}
    for h in needs:
        m = by_id[matched[sweeps.run_id(h)]]
        assert m.config["clip"] == "none" and m.config["lr"] == sweeps.matched_lr(h)
        same = ("model", "model_kw", "epochs", "schedule", "subset", "val", "seed", "batch_size")
        assert {k: m.config.get(k) for k in same} == {k: h.config.get(k) for k in same}
    # summary.csv lists every run, with the best epoch chosen on validation and no best-on-test column
    rows = list(csv.DictReader(open(folder / "summary.csv")))
    assert {r["run_id"] for r in rows} == set(by_id)
    assert "best_val_acc" in rows[0] and "test_acc_at_best_val" in rows[0] and "best_test_acc" not in rows[0]
