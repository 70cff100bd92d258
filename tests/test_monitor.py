"""gradkit.monitor: per-step norms and per-layer update ratios against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradkit.clip import clipper
from gradkit.monitor import GradMonitor, MonitorHistory, dead_relu_share


def two_layers() -> nn.Module:
    """Linear(2 -> 2) then Linear(2 -> 1), with weights set by hand."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))  # ||w|| = 5
        model[0].bias.copy_(torch.tensor([1.0, 0.0]))  # ||b|| = 1
        model[1].weight.copy_(torch.tensor([[6.0, 8.0]]))  # ||w|| = 10
    return model


GRADS = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([2.0, 0.0]), torch.tensor([[0.0, 4.0]])]  # norms sqrt5, 2, 4


def set_grads(model: nn.Module, scale: float = 1.0) -> None:
    for p, g in zip(model.parameters(), GRADS):
        p.grad = g * scale


def test_sgd_update_ratio_by_hand():
    model = two_layers()
    w_norms = [5.0, 1.0, 10.0]
    g_norms = [math.sqrt(5.0), 2.0, 4.0]
    lr = 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with GradMonitor(model).attach(opt) as mon:
        set_grads(model)
        result = mon.clip("none")
        opt.step()
    h = mon.history
    assert isinstance(h, MonitorHistory)
    assert h.layer_names == ["0.weight", "0.bias", "1.weight"]
    total = math.sqrt(sum(n * n for n in g_norms))
    assert h.steps.tolist() == [0] and h.layer_steps.tolist() == [0]
    assert h.norm_before == pytest.approx([total]) and h.norm_after == pytest.approx([total])
    assert h.clipped.tolist() == [False] and float(result.norm_before) == pytest.approx(total)
    assert h.layer_grad_norm[0] == pytest.approx(g_norms)
    assert h.weight_norm[0] == pytest.approx(w_norms)
    # plain SGD: ||w_after - w_before|| / ||w_before|| = ||lr * g|| / ||w||
    assert h.update_ratio[0] == pytest.approx([lr * g / w for g, w in zip(g_norms, w_norms)], rel=1e-6)


def test_clipping_shows_up_in_norms_and_updates():
    model = two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g_norms = np.array([math.sqrt(5.0), 2.0, 4.0])
    total = float(np.linalg.norm(g_norms))
    c = 1.0
    with GradMonitor(model).attach(opt) as mon:
        for scale in (1.0, 0.01):  # step 0: ||g|| = 5 > c, clipped; step 1: ||g|| = 0.05, not clipped
            set_grads(model, scale)
            mon.clip("norm:1.0")
            opt.step()
    h = mon.history
    assert h.norm_before == pytest.approx([total, 0.01 * total], rel=1e-6)
    assert h.norm_after == pytest.approx([c, 0.01 * total], rel=1e-5)
    assert h.clipped.tolist() == [True, False]
    assert h.layer_grad_norm[0] == pytest.approx(g_norms, rel=1e-6)  # recorded before clipping
    coef = c / (total + 1e-6)
    w0 = np.array([5.0, 1.0, 10.0])
    assert h.update_ratio[0] == pytest.approx(0.1 * coef * g_norms / w0, rel=1e-5)
    assert h.weight_norm.shape == (2, 3) and h.update_ratio.shape == (2, 3)


def test_momentum_update_ratio_matches_weight_copies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    expected = []
    with GradMonitor(model, every=1).attach(opt) as mon:
        for _ in range(4):
            x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            mon.clip("norm:0.5")
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            expected.append([float((p.detach() - b).norm() / b.norm()) for p, b in zip(model.parameters(), before)])
    h = mon.history
    assert h.update_ratio == pytest.approx(np.array(expected), rel=1e-5)
    assert h.steps.tolist() == [0, 1, 2, 3]


def test_every_k_records_layers_on_multiples_of_k():
    model = two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with GradMonitor(model, every=2).attach(opt) as mon:
        for _ in range(5):
            set_grads(model)
            mon.clip("norm:10")
            opt.step()
    h = mon.history
    assert h.steps.tolist() == [0, 1, 2, 3, 4] and h.layer_steps.tolist() == [0, 2, 4]
    assert h.layer_grad_norm.shape == (3, 3) and h.norm_before.shape == (5,)
    assert not np.isnan(h.update_ratio).any()
    global_only = GradMonitor(two_layers(), every=0)
    set_grads(global_only.model)
    global_only.clip("none")
    assert global_only.history.layer_grad_norm.shape == (0, 3) and global_only.history.steps.tolist() == [0]


def test_long_runs_keep_every_step():
    model = two_layers()
    mon = GradMonitor(model, every=1)
    scales = [1.0 + i / 100 for i in range(300)]  # past the buffers' first capacity (256 rows)
    for scale in scales:
        set_grads(model, scale)
        mon.clip("none")
    h = mon.history
    assert h.steps.tolist() == list(range(300)) and h.layer_steps.tolist() == list(range(300))
    assert h.norm_before == pytest.approx([5.0 * s for s in scales], rel=1e-6)
    assert h.layer_grad_norm[:, 2] == pytest.approx([4.0 * s for s in scales], rel=1e-6)


def test_without_optimizer_each_clip_is_a_step_and_update_is_nan():
    model = two_layers()
    mon = GradMonitor(model)
    for _ in range(3):
        set_grads(model, 10.0)
        mon.clip(clipper("value:1.0"))
    h = mon.history
    assert h.steps.tolist() == [0, 1, 2] and h.clipped.all()
    assert np.isnan(h.update_ratio).all() and h.weight_norm[0] == pytest.approx([5.0, 1.0, 10.0])


def test_attached_without_clip_records_unclipped_steps():
    model = two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with GradMonitor(model).attach(opt) as mon:
        set_grads(model)
        opt.step()
    h = mon.history
    assert h.norm_before == pytest.approx([5.0]) and h.norm_after == pytest.approx([5.0]) and h.clipped.tolist() == [False]
    assert h.update_ratio[0] == pytest.approx([0.1 * math.sqrt(5) / 5, 0.1 * 2 / 1, 0.1 * 4 / 10], rel=1e-6)


def test_skipped_optimizer_step_and_missing_grads():
    model = two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = GradMonitor(model).attach(opt)
    set_grads(model)
    mon.clip("none")  # no opt.step(): the step was skipped (as a GradScaler does on inf)
    set_grads(model)
    model[0].bias.grad = None
    mon.clip("none")
    opt.step()
    h = mon.history
    assert h.steps.tolist() == [0, 1]
    assert np.isnan(h.update_ratio[0]).all() and not np.isnan(h.update_ratio[1]).any()
    assert math.isnan(h.layer_grad_norm[1, 1]) and h.update_ratio[1, 1] == 0.0  # no gradient, no update
    assert h.norm_before[1] == pytest.approx(math.sqrt(5 + 16))
    mon.detach()


def test_context_manager_detaches_and_reset_clears():
    model = two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with GradMonitor(model).attach(opt) as mon:
        set_grads(model)
        opt.step()
    set_grads(model)
    opt.step()  # after exit: not recorded
    assert mon.history.steps.tolist() == [0]
    mon.reset()
    h = mon.history
    assert h.steps.shape == (0,) and h.norm_before.shape == (0,) and h.update_ratio.shape == (0, 3)


def test_attaching_the_same_optimizer_twice_records_each_step_once():
    model = two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = GradMonitor(model)
    assert mon.attach(opt).attach(opt) is mon
    for _ in range(2):
        set_grads(model)
        mon.clip("norm:1.0")
        opt.step()
    h = mon.history
    assert h.steps.tolist() == [0, 1] and h.layer_steps.tolist() == [0, 1]
    assert h.norm_before == pytest.approx([5.0, 5.0]) and h.clipped.tolist() == [True, True]
    assert h.update_ratio.shape == (2, 3) and not np.isnan(h.update_ratio).any()
    mon.detach()
    set_grads(model)
    opt.step()  # detached once: no hook is left behind
    assert mon.history.steps.tolist() == [0, 1]


def test_attaching_a_second_optimizer_is_refused_until_detached():
    model = two_layers()
    first, second = (torch.optim.SGD(model.parameters(), lr=0.1) for _ in range(2))
    mon = GradMonitor(model).attach(first)
    with pytest.raises(ValueError, match=r"already attached.*detach\(\)"):
        mon.attach(second)
    set_grads(model)
    second.step()  # the refused optimizer was not hooked
    assert mon.history.steps.tolist() == []
    mon.detach()
    mon.attach(second)
    set_grads(model)
    second.step()
    first.step()
    assert mon.history.steps.tolist() == [0]


def test_clip_spec_strings_are_built_once():
    model = two_layers()
    mon = GradMonitor(model, every=0)
    for scale in (1.0, 2.0, 4.0):
        set_grads(model, scale)
        mon.clip("auto:50")
    thresholds = mon._clippers["auto:50"]._auto.history
    assert thresholds.tolist() == pytest.approx([5.0, 10.0, 20.0])  # one AutoClip saw all three steps
    assert mon.history.norm_after[2] == pytest.approx(10.0, rel=1e-5)  # median of (5, 10, 20)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        GradMonitor([torch.zeros(2)])
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match=r"every must be an int >= 0"):
            GradMonitor(two_layers(), every=bad)
    assert GradMonitor(two_layers(), every=np.int64(2)).every == 2  # a NumPy int is an int (checks.check_int)
    from gradkit.monitor import DeadUnitMonitor

    assert DeadUnitMonitor(nn.Sequential(nn.Linear(1, 2), nn.ReLU()), every=np.int64(3)).every == 3
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        GradMonitor(two_layers()).attach("sgd")
    with pytest.raises(ValueError, match="unknown clipping method"):
        GradMonitor(two_layers()).clip("clip:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_sync_until_history_on_cuda():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(64, 16, device="cuda"), torch.randint(0, 4, (64,), device="cuda")
    clip = clipper("norm:0.1")
    with GradMonitor(model).attach(opt) as mon:
        for step in range(4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if step == 1:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            mon.clip(clip)
            opt.step()
        torch.cuda.set_sync_debug_mode("default")
    h = mon.history
    assert h.steps.tolist() == [0, 1, 2, 3] and h.clipped.all()


# ---- dead ReLU units ----------------------------------------------------------------------------


def test_dead_unit_share_by_hand_for_features_and_channels():
    from gradkit.monitor import dead_unit_share

    # (B=2, F=4): features 0 and 3 are 0 for both inputs; feature 2 is 0 for one input only (alive).
    a = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 3.0, 2.0, 0.0]])
    assert float(dead_unit_share(a)) == pytest.approx(2 / 4)
    # (B=2, C=3, H=2, W=2): channel 1 is 0 everywhere; channel 2 has one non-zero pixel in one image.
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = 1.0
    x[1, 2, 1, 0] = 0.5
    assert float(dead_unit_share(x)) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="activation must be a tensor of shape \\(batch, units, ...\\)"):
        dead_unit_share(torch.zeros(5))


def relu_net() -> nn.Module:
    """Linear(1 -> 3) + ReLU, Linear(3 -> 2) + ReLU with weights set by hand: for inputs x > 0 unit 1 of
    the first layer is always negative (dead); the second layer's unit 0 reads only that dead unit."""
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0], [2.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
        net[2].bias.zero_()
    return net


def test_dead_units_per_layer_by_hand():
    from gradkit.monitor import dead_units

    net = relu_net()
    x = torch.tensor([[1.0], [2.0], [0.5]])
    assert dead_units(net, x) == {"1": pytest.approx(1 / 3), "3": pytest.approx(1 / 2)}
    # With a negative input unit 1 comes alive and units 0 and 2 are 0 for that input only: nothing dead.
    assert dead_units(net, torch.tensor([[1.0], [-1.0]])) == {"1": 0.0, "3": 0.0}
    with pytest.raises(ValueError, match="has no nn.ReLU modules"):
        dead_units(nn.Linear(1, 1), x)


def test_dead_unit_monitor_counts_training_forwards_only():
    from gradkit.monitor import DeadUnitMonitor

    net = relu_net()
    with DeadUnitMonitor(net, every=2) as dead:
        for step in range(5):
            net.train()
            net(torch.tensor([[1.0], [2.0]]) if step < 3 else torch.tensor([[-1.0], [1.0]]))
            net.eval()
            net(torch.tensor([[-5.0]]))  # an evaluation pass: not counted, not measured
    h = dead.history
    assert h.steps.tolist() == [0, 2, 4] and h.layer_names == ["1", "3"]
    np.testing.assert_allclose(h.share, [[1 / 3, 1 / 2], [1 / 3, 1 / 2], [0.0, 0.0]])
    net.train()
    net(torch.tensor([[1.0]]))  # detached on exit: nothing more recorded
    assert dead.history.steps.tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        DeadUnitMonitor(net, every=0)


def test_dead_unit_monitor_watches_fit():
    """Inside fit (the model passed as a module): one row per `every`-th training step, none for evaluation."""
    from gradkit.data import synthetic
    from gradkit.models import PlainCNN
    from gradkit.monitor import DeadUnitMonitor
    from gradkit.train import fit

    data = synthetic(n=64, n_test=32, n_val=16)
    model = PlainCNN(depth=3, width=2, init="kaiming")
    with DeadUnitMonitor(model, every=2) as dead:
        h = fit(model, data, epochs=1, batch_size=16, lr=0.01, progress=False, device="cpu")
    assert len(h.loss) == 4
    assert dead.history.steps.tolist() == [0, 2] and dead.history.share.shape == (2, 3)
    assert np.all((dead.history.share >= 0) & (dead.history.share <= 1))


def test_dead_relu_share_by_hand_and_restores_the_mode():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 0.0]).reshape(3, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, -1.0]))  # channel 1 sees -x <= 0, channel 2 is -1: dead
        net[3].weight.zero_()
        net[3].bias.copy_(torch.tensor([1.0, -1.0, -1.0, 2.0]))  # 2 of the 4 features dead
    net.train()
    x = torch.rand(5, 1, 2, 2) + 0.1
    assert dead_relu_share(net, x) == pytest.approx((2 + 2) / (3 + 4))
    assert net.training
    with pytest.raises(ValueError, match="no nn.ReLU modules"):
        dead_relu_share(nn.Linear(2, 2), torch.ones(1, 2))
