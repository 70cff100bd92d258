"""Lesson 08's recurrent helpers: the adding problem, the cells (against torch.nn), the training
records, the divergence and success rules, the probes and the table."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradkit.lessons import recurrent as rec
from gradkit.lessons.recurrent import AddingTask, RecurrentNet, Run


def test_adding_problem_shapes_markers_and_target():
    x, y = rec.adding_problem(64, 12, torch.Generator().manual_seed(3))
    assert x.shape == (64, 12, 2) and y.shape == (64, 1)
    markers = x[..., 1]
    assert torch.equal(markers[:, :6].sum(1), torch.ones(64)) and torch.equal(markers[:, 6:].sum(1), torch.ones(64))
    assert bool(((x[..., 0] >= 0) & (x[..., 0] < 1)).all())
    # By hand for the first sequence: add the values at the two marked positions.
    a, b = markers[0].nonzero().flatten().tolist()
    assert y[0, 0].item() == pytest.approx(x[0, a, 0].item() + x[0, b, 0].item())


def test_adding_problem_is_seeded_and_checks_arguments():
    one = rec.adding_problem(4, 8, torch.Generator().manual_seed(0))
    two = rec.adding_problem(4, 8, torch.Generator().manual_seed(0))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    with pytest.raises(ValueError, match="length"):
        rec.adding_problem(4, 1, torch.Generator())
    with pytest.raises(ValueError, match="length"):
        AddingTask(1)


def _torch_twin(net: RecurrentNet) -> nn.Module:
    kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[net.cell]
    twin = kind(net.w_ih.shape[0], net.hidden, batch_first=True)
    with torch.no_grad():
        twin.weight_ih_l0.copy_(net.w_ih.T)
        twin.weight_hh_l0.copy_(net.w_hh.T)
        twin.bias_ih_l0.copy_(net.bias)
        twin.bias_hh_l0.zero_()
    return twin


@pytest.mark.parametrize("cell", rec.CELLS)
def test_cells_match_torch_nn(cell):
    net = RecurrentNet(cell, 3, 5, 2, seed=1)
    x = torch.randn(4, 7, 3, generator=torch.Generator().manual_seed(2))
    states, _ = _torch_twin(net)(x)
    expected = states[:, -1] @ net.w_out + net.b_out
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_stacked_nets_equal_each_net_alone():
    nets = [RecurrentNet("gru", 2, 6, 1, seed=s) for s in (0, 1)]
    x = torch.randn(2, 3, 5, 2)
    out, _ = rec.run_stack(rec.stack_weights(nets), "gru", x)
    for k, net in enumerate(nets):
        assert torch.allclose(out[k], net(x[k]), atol=1e-6)


def test_rho_sets_the_recurrent_scale_and_is_for_the_vanilla_cell_only():
    big = RecurrentNet("rnn", 2, 200, 1, rho=1.5, seed=0)
    radius = torch.linalg.eigvals(big.w_hh.detach()).abs().max().item()
    assert radius == pytest.approx(1.5, rel=0.1)
    with pytest.raises(ValueError, match="rho"):
        RecurrentNet("gru", 2, 4, 1, rho=1.0)
    with pytest.raises(ValueError, match="cell"):
        RecurrentNet("transformer", 2, 4, 1)


def test_training_records_follow_the_clipping_spec():
    runs = rec.train(AddingTask(6), "rnn", [("none", 0), ("norm:0.05", 0), ("value:0.01", 1)], hidden=8, lr=0.05,
                     steps=20, eval_every=10, test_size=16)
    none, norm, value = runs
    assert len(none.loss) == len(none.norm_before) == len(none.clipped) == 20
    assert none.norm_after == none.norm_before and not any(none.clipped)
    # Same seed, same start and the same first batch: the same first gradient.
    assert norm.norm_before[0] == pytest.approx(none.norm_before[0])
    for before, after, clipped in zip(norm.norm_before, norm.norm_after, norm.clipped):
        assert after == pytest.approx(min(before, 0.05), rel=1e-4)
        assert clipped == (before > 0.05)
    assert value.config["clip"] == "value:0.01" and value.config["seed"] == 1
    assert none.test_steps == [0, 10, 20] and len(none.test_loss) == 3
    assert norm.clip_share == pytest.approx(np.mean(norm.clipped))


def test_divergence_rule_stops_a_run_and_it_is_not_solved():
    [wild] = rec.train(AddingTask(6), "rnn", [("none", 0)], hidden=8, lr=50.0, steps=30, momentum=0.9, test_size=16)
    assert wild.diverged and len(wild.loss) == wild.diverged_step
    assert all(math.isfinite(v) and v <= rec.DIVERGE_FACTOR * AddingTask(6).baseline for v in wild.loss)
    assert wild.final_test_loss == math.inf and not wild.solved(1e9)


def test_solved_rule():
    assert Run({"clip": "none"}, test_loss=[0.5, 0.005]).solved(rec.ADDING_TARGET)
    assert not Run({"clip": "none"}, test_loss=[0.5, 0.05]).solved(rec.ADDING_TARGET)
    assert not Run({"clip": "none"}, test_loss=[0.001], diverged_step=4).solved(rec.ADDING_TARGET)


def test_hidden_grad_norms_last_step_by_hand():
    net = RecurrentNet("rnn", 2, 6, 1, seed=0)
    x, y = rec.adding_problem(5, 8, torch.Generator().manual_seed(1))
    norms = rec.hidden_grad_norms(net, x, y, AddingTask(8))
    # L = mean((h_T w_out + b - y)^2) over B: dL/dh_T = (2/B)(out - y) w_out^T.
    with torch.no_grad():
        expected = (2 / 5 * (net(x) - y) @ net.w_out.T).norm().item()
    assert norms.shape == (8,) and norms[-1] == pytest.approx(expected, rel=1e-5)


def test_cliff_probe_starts_at_the_loss_and_descends():
    net = RecurrentNet("rnn", 2, 8, 1, seed=0)
    x, y = rec.adding_problem(16, 6, torch.Generator().manual_seed(0))
    probe = rec.cliff_probe(net, x, y, AddingTask(6), reach=1e-3, points=3)
    with torch.no_grad():
        start = AddingTask(6).loss(net(x)[None], y[None]).item()
    assert probe["loss"][0] == pytest.approx(start, rel=1e-6)
    assert probe["loss"][1] < probe["loss"][0]
    assert probe["grad_norm"] > 0
    with pytest.raises(ValueError, match="reach"):
        rec.cliff_probe(net, x, y, AddingTask(6), reach=0.0)


def test_train_checks_arguments_before_work():
    with pytest.raises(ValueError, match="cell"):
        rec.train(AddingTask(6), "rnm", [("none", 0)], hidden=4, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="members"):
        rec.train(AddingTask(6), "rnn", [], hidden=4, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="spec"):
        rec.train(AddingTask(6), "rnn", [("norm:x", 0)], hidden=4, lr=0.1, steps=1)


def test_percentile_thresholds_and_table():
    assert rec.percentile_thresholds([1.0, 2.0, 3.0, float("nan")], [0, 100]) == [1.0, 3.0]
    runs = [Run({"clip": "none", "seed": 0}, clipped=[False] * 4, diverged_step=4),
            Run({"clip": "none", "seed": 1}, clipped=[False] * 4, test_loss=[0.001]),
            Run({"clip": "norm:1.0", "seed": 0}, clipped=[True, False, False, False], test_loss=[0.001]),
            Run({"clip": "norm:1.0", "seed": 1}, clipped=[False, False, False, False], test_loss=[0.002])]
    none, norm = rec.seed_table(runs, target=0.01)
    assert (none.seeds, none.solved, none.diverged, none.failed) == (2, 1, 1, 1)
    assert (norm.solved, norm.clip_share, norm.max_clip_share) == (2, 0.125, 0.25)
    text = rec.table_findings([none, norm])
    assert text[0].startswith("Without clipping 1 of 2 seeds diverged and 0 more failed") and "not a majority" in text[0]
    assert "solved 2 of 2 seeds" in text[1] and "rare clipping" not in text[1]
    assert "| norm clipping, c=1 | 2 | 2 | 0 | 0 | 12.5%, 25.0% |" in rec.format_seed_table([none, norm])


def test_runs_round_trip_through_json(tmp_path):
    runs = rec.train(AddingTask(6), "lstm", [("tensor_norm:0.5", 2)], hidden=4, lr=0.1, steps=3, test_size=8)
    path = rec.save_runs(tmp_path / "runs.json", runs, {"device": "test"})
    back, provenance = rec.load_runs(path)
    assert provenance == {"device": "test"} and back[0].config == runs[0].config
    assert back[0].clipped == runs[0].clipped and back[0].loss == pytest.approx(runs[0].loss, rel=1e-4)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="make_lesson08_runs"):
        rec.load_runs(tmp_path / "missing.json")


def test_contrast_numbers_by_hand():
    import matplotlib
    matplotlib.use("Agg")
    from gradkit import plots
    from gradkit.lessons import recurrent_views as views
    from gradkit.sweeps import SweepRow

    runs = [Run({"clip": "none", "seed": s}, clipped=[False] * 4, diverged_step=2) for s in (0, 1)]
    runs += [Run({"clip": "norm:1.0", "seed": s}, clipped=[True, False, False, False], test_steps=[4], test_loss=[0.001])
             for s in (0, 1)]
    rows = [SweepRow("A", "setting A", "none", None, [0.30, 0.40], 0, 1.0, 0.0),
            SweepRow("A", "setting A", "norm", 0.5, [0.42, 0.38], 0, 1.0, 0.99)]
    fig, axes = plots.figure(1, 2)
    points = views.contrast(axes[0][0], axes[0][1], runs, 0.01, rows)
    assert points["rnn"] == {"norm:1.0": (0.25, 100.0)}
    rate, gain = points["cifar"][("A", "norm:0.5")]
    assert rate == 0.99 and gain == pytest.approx(5.0)
    view = views.run_view(runs, target=0.01, examples=["norm:1.0"])
    assert view.data["spec"] == "norm:1.0" and view.data["solved"] == 2
    view.controls["method"].value = "none"
    assert view.data["spec"] == "none" and view.data["solved"] == 0


def test_repeat_note_names_each_earlier_run_and_explains_a_flipped_outcome():
    solved = Run(config={"clip": "none", "seed": 0}, test_loss=[0.5, 0.0111])
    failed = Run(config={"clip": "none", "seed": 0}, test_loss=[0.5, 0.161])
    blown = Run(config={"clip": "none", "seed": 0}, loss=[0.3], diverged_step=1946)
    assert rec.outcome(blown, 0.04) == "diverged at step 1946"
    assert rec.outcome(failed, 0.04) == "not solved (final test loss 0.1610)"
    same = rec.repeat_note(solved, [("the shipped run", solved)], 0.04)
    assert same == "The shipped run: solved (final test loss 0.0111), the same outcome as this run."
    # lesson 08's cpu run: seed 0 without clipping failed stacked with its clipped twin and solved alone
    note = rec.repeat_note(solved, [("section 1's run", failed), ("the shipped run", blown)], 0.04)
    assert note.startswith("Section 1's run: not solved (final test loss 0.1610), unlike this run. "
                           "The shipped run: diverged at step 1946, unlike this run. Same start, same batches")
    assert "rounded differently" in note and "counts seeds" not in same
