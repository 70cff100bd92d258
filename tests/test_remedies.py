"""Weight clipping and the max-norm constraint, checked against hand computations and torch.renorm."""

import pytest
import torch
from torch import nn

from gradkit.remedies import Constraint, clip_weights_, constraint, max_norm_, remedy_findings, remedy_table


def test_clip_weights_clamps_each_element_and_reports_the_changed_share():
    w = torch.tensor([0.5, -2.0, 3.0, -0.25])
    share = clip_weights_(w, 1.0)
    assert w.tolist() == [0.5, -1.0, 1.0, -0.25]
    assert share.item() == pytest.approx(2 / 4)


def test_clip_weights_on_a_module_clamps_every_parameter_including_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
    before = [p.detach().clone() for p in model.parameters()]
    n_outside = sum(int((p.abs() > 0.1).sum()) for p in before)
    share = clip_weights_(model, 0.1)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b.clamp(-0.1, 0.1))
    assert share.item() == pytest.approx(n_outside / sum(p.numel() for p in before))


def test_clip_weights_accepts_name_tensor_pairs_and_leaves_others_alone():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.bias.fill_(5.0)
    clip_weights_([("weight", model.weight)], 2.0)
    assert model.weight.max().item() == 2.0
    assert model.bias.max().item() == 5.0


def test_max_norm_rows_by_hand():
    # Rows have L2 norms 5, 0.5 and 13: with c = 1 the first and last are scaled to norm 1.
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [5.0, 12.0]])
    share = max_norm_(w, 1.0)
    expected = torch.tensor([[0.6, 0.8], [0.3, 0.4], [5 / 13, 12 / 13]])
    assert torch.allclose(w, expected)
    assert share.item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_max_norm_matches_torch_renorm(dim):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 3, 3, generator=g)
    expected = torch.renorm(w, 2, dim, 2.0)
    max_norm_(w, 2.0, dim=dim)
    assert torch.allclose(w, expected, atol=1e-6)


def test_max_norm_on_a_module_constrains_conv_filters_and_linear_rows_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)
    bias_before = model[0].bias.detach().clone()
    bn_before = model[1].weight.detach().clone()
    max_norm_(model, 0.5)
    conv_norms = model[0].weight.flatten(1).norm(dim=1)
    linear_norms = model[3].weight.norm(dim=1)
    assert torch.allclose(conv_norms, torch.full((4,), 0.5))
    assert torch.allclose(linear_norms, torch.full((2,), 0.5))
    assert torch.equal(model[0].bias, bias_before)
    assert torch.equal(model[1].weight, bn_before)


def test_max_norm_leaves_small_units_unchanged_and_whole_tensor_mode():
    w = torch.tensor([[0.1, 0.2], [0.3, 0.0]])
    before = w.clone()
    assert max_norm_(w, 1.0).item() == 0.0
    assert torch.equal(w, before)
    v = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # whole-tensor norm 5 -> 2.5
    assert max_norm_(v, 2.5, dim=None).item() == 1.0
    assert torch.allclose(v, torch.tensor([[1.5, 0.0], [0.0, 2.0]]))


def test_constraint_parses_specs_and_applies_them():
    wc = constraint("weight_clip:0.5")
    mn = constraint("max_norm:3")
    assert (wc.method, wc.threshold, wc.spec) == ("weight_clip", 0.5, "weight_clip:0.5")
    assert (mn.method, mn.threshold, mn.label) == ("max_norm", 3.0, "max-norm constraint, c=3")
    assert constraint(mn) is mn and isinstance(mn, Constraint)
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
        model.bias.fill_(2.0)
    wc(model)
    assert model.weight.tolist() == [[0.5, 0.5]] and model.bias.item() == 0.5
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[6.0, 8.0]]))
    mn(model)
    assert torch.allclose(model.weight, torch.tensor([[1.8, 2.4]]))


@pytest.mark.parametrize("spec", ["max_norm", "max_norm:", "max_norm:-1", "max_norm:0", "weight_clip:abc",
                                  "weight_clip:inf", "norm:1.0", "", 3.0, None])
def test_constraint_rejects_bad_specs_naming_the_accepted_ones(spec):
    with pytest.raises(ValueError, match="accepted specs: weight_clip:<c>, max_norm:<c>"):
        constraint(spec)


@pytest.mark.parametrize("c", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_thresholds_are_validated(c):
    with pytest.raises(ValueError, match="c must be a finite number > 0"):
        clip_weights_(torch.ones(2), c)
    with pytest.raises(ValueError, match="c must be a finite number > 0"):
        max_norm_(torch.ones(2, 2), c)


def test_bad_dim_and_bad_items_are_rejected():
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        max_norm_(torch.ones(2, 2), 1.0, dim=2)
    with pytest.raises(ValueError, match="dim must be an int"):
        max_norm_(torch.ones(2, 2), 1.0, dim=0.5)
    with pytest.raises(ValueError, match="params must hold tensors"):
        clip_weights_([1.0, 2.0], 1.0)


def _history(**kw):
    from gradkit.train import History

    return History(**kw)


def test_remedy_table_rows_by_hand():
    ok = _history(config={"clip": "norm:1"}, loss=[2.0] * 4, grad_norm_before=[0.5, 4.0, float("nan"), 2.0],
                  clipped=[False, True, False, True], step_norm=[0.1, 0.9, 0.3, 0.2], val_acc=[0.2, 0.35],
                  test_acc=[0.9, 0.9], epoch_seconds=[1.25, 1.0])
    bad = _history(diverged=True, diverged_step=7, grad_norm_before=[1.0, 1e6], clipped=[False, False])
    lines = remedy_table(["clipped", "plain"], [ok, bad]).splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 8
    # validation numbers, never the test ones; largest step = max step_norm; no training time (machine load)
    assert lines[2] == "| clipped | no | 35.0% | 35.0% | 4 | 0.9 | 50% |"
    assert lines[3] == "| plain | yes, step 7 | - | - | 1e+06 | - | 0% |"
    assert "time" not in lines[0]
    dead = remedy_table(["clipped", "plain"], [ok, bad], dead=[0.125, None]).splitlines()
    assert "dead ReLU units" in dead[0] and dead[2].endswith("| 50% | 12.5% |") and dead[3].endswith("| 0% | - |")
    with pytest.raises(ValueError, match="same length"):
        remedy_table(["a"], [])
    with pytest.raises(ValueError, match="one value"):
        remedy_table(["a"], [ok], dead=[])
    with pytest.raises(ValueError, match="without validation accuracy: x"):
        remedy_table(["x"], [_history(test_acc=[0.3])])


def test_remedy_findings_names_failed_and_rescued_runs_on_validation():
    runs = {"plain": _history(diverged=True, diverged_step=3), "clip": _history(val_acc=[0.25], test_acc=[0.99]),
            "bn": _history(val_acc=[0.40], test_acc=[0.38]),
            "adam": _history(val_acc=[0.115], test_acc=[0.9], loss=[2.3] * 100)}
    text = remedy_findings(list(runs), list(runs.values()), baseline="plain")
    assert text.splitlines() == ["Diverged: plain. Stuck at chance: adam (2 of 4 runs failed).",
                                 "Trained where plain failed: clip, bn.",
                                 "Best final validation accuracy: bn, 40.0% (its test accuracy: 38.0%)."]
    calm = remedy_findings(["clip", "bn"], [runs["clip"], runs["bn"]], baseline="clip")
    assert "clip trained at this size" in calm
    short = remedy_findings(["plain", "bn"], [_history(val_acc=[0.1], loss=[2.3] * 10), runs["bn"]], baseline="plain")
    assert short.splitlines()[:2] == ["Diverged: none. Stuck at chance: none (0 of 2 runs failed). Too short "
                                      "(< 100 steps) to call stuck: plain.",
                                      "plain was too short to judge: inconclusive at this size."]
    with pytest.raises(ValueError, match="accepted values: clip, bn"):
        remedy_findings(["clip", "bn"], [runs["clip"], runs["bn"]], baseline="x")
    paired = remedy_findings(list(runs), list(runs.values()), baseline="plain", pairs=[("clip", "bn"), ("plain", "clip")])
    assert paired.splitlines()[-1] == "Change in final validation accuracy: bn vs clip: +15.0 points; clip vs plain: diverged."
    with pytest.raises(ValueError, match="pairs must name labels"):
        remedy_findings(list(runs), list(runs.values()), baseline="plain", pairs=[("clip", "nope")])
    with pytest.raises(ValueError, match="without validation accuracy"):
        remedy_findings(["a", "b"], [_history(test_acc=[0.3]), runs["bn"]], baseline="a")


def test_remedy_bars_draw_a_bar_per_finished_run_dots_on_the_log_axis_and_mark_diverged_ones():
    import matplotlib.pyplot as plt

    from gradkit.plots import remedy_bars

    ok = _history(grad_norm_before=[1.0, 40.0], val_acc=[0.3], test_acc=[0.9])
    bad = _history(diverged=True, diverged_step=9, grad_norm_before=[2.0, float("inf")])
    fig, (ax_acc, ax_norm) = plt.subplots(1, 2)
    remedy_bars(ax_acc, ax_norm, ["ok", "bad"], [ok, bad])
    assert [round(p.get_width(), 6) for p in ax_acc.patches] == [30.0]
    assert not ax_norm.patches  # no bars on the log axis
    dots = sorted(float(line.get_xdata()[0]) for line in ax_norm.lines if line.get_marker() == "o")
    assert dots == [2.0, 40.0]
    assert ax_norm.get_xscale() == "log"
    assert any(t.get_text() == "diverged at step 9" for t in ax_acc.texts)
    top_down = sorted(zip(ax_acc.get_yticks(), [t.get_text() for t in ax_acc.get_yticklabels()]), reverse=True)
    assert [label for _, label in top_down] == ["ok", "bad"]
    plt.close(fig)
