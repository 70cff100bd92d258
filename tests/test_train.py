"""gradkit.train: fit (clipping records, divergence, schedules, arguments)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.train import DeviceLoader, History, evaluate, fit

CPU = torch.device("cpu")


# ---------------------------------------------------------------- fit


@pytest.fixture(scope="module")
def data():
    from gradkit.data import synthetic

    return synthetic(n=256, n_test=128, seed=0)


def _small(**kw):
    return {"model": "seed_cnn", "model_kw": {"width": 0.25}, "progress": False, **kw}


def _linear():
    # Schedules and optimizers do not depend on the model: a linear one keeps these tests fast.
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def test_fit_learns_synthetic_data(data):
    h = fit(data=data, epochs=3, lr=0.05, batch_size=32, clip="norm:1.0", **_small())
    assert len(h.loss) == 3 * 8 == len(h.grad_norm_before) == len(h.clipped) == len(h.lr)
    assert len(h.test_acc) == len(h.train_acc) == len(h.epoch_seconds) == 3
    assert sum(h.loss[-4:]) / 4 < 0.7 * sum(h.loss[:4]) / 4
    assert h.final_test_acc > 0.5  # chance is 0.1
    assert h.synthetic and "synthetic" in h.label and h.dataset == "synthetic (not CIFAR-10)"
    assert not h.diverged and h.diverged_step is None
    assert h.config["clip"] == "norm:1.0" and h.config["model_kw"] == {"width": 0.25}


def test_first_step_records_and_update_match_a_manual_step(data):
    from gradkit.models import SeedCNN

    torch.manual_seed(3)
    model = SeedCNN(width=0.25)
    manual = SeedCNN(width=0.25)
    manual.load_state_dict(model.state_dict())
    h = fit(model, data, epochs=1, lr=0.1, clip="norm:0.5", max_steps=1, batch_size=64, seed=7,
            progress=False, device="cpu")

    x, y = next(iter(DeviceLoader(data.train_x, data.train_y, 64, train=True, mean=data.mean, std=data.std,
                                  seed=7, device="cpu")))
    loss = F.cross_entropy(manual(x), y)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(manual.parameters(), max_norm=0.5)
    torch.optim.SGD(manual.parameters(), lr=0.1, momentum=0.9).step()

    assert h.loss[0] == pytest.approx(loss.item(), rel=1e-5)
    assert h.grad_norm_before[0] == pytest.approx(norm.item(), rel=1e-5)
    assert norm.item() > 0.5 and h.clipped == [True]
    assert h.grad_norm_after[0] == pytest.approx(0.5, rel=1e-4)
    for p, q in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


class _BreaksAt(nn.Module):
    """A small model whose training-mode output becomes NaN from step ``k`` on (0-based)."""

    def __init__(self, k):
        super().__init__()
        self.k, self.calls = k, 0
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls - 1 >= self.k:
                out = out * float("nan")
        return out


def test_diverging_run_stops_at_the_first_nonfinite_step_without_raising(data):
    # 256 images / 16 = 16 steps per epoch: step 30 is in epoch 2, after the check at step 24.
    model = _BreaksAt(30)
    h = fit(model, data, epochs=5, batch_size=16, lr=0.01, progress=False)
    assert h.diverged and h.diverged_step == 30
    assert len(h.loss) == len(h.grad_norm_before) == len(h.clipped) == len(h.lr) == 30
    assert all(math.isfinite(v) for v in h.loss)
    assert len(h.test_acc) == 1  # epoch 1 finished; the epoch it broke in has no record
    assert model.calls <= 32  # it stopped at the next check, not after 5 epochs
    assert h.final_test_acc is None and h.best_test_acc == h.test_acc[0]


def test_huge_learning_rate_diverges_and_is_marked(data):
    h = fit(data=data, epochs=2, lr=1e6, clip=None, batch_size=32, **_small())
    assert h.diverged and h.diverged_step == len(h.loss) and h.diverged_step < 16


def test_same_seed_same_losses_other_seed_other_losses(data):
    a = fit(data=data, max_steps=3, lr=0.05, batch_size=64, seed=1, **_small())
    b = fit(data=data, max_steps=3, lr=0.05, batch_size=64, seed=1, **_small())
    c = fit(data=data, max_steps=3, lr=0.05, batch_size=64, seed=2, **_small())
    assert a.loss == b.loss and a.grad_norm_before == b.grad_norm_before and a.test_acc == b.test_acc
    assert a.loss != c.loss


@pytest.mark.parametrize("kw, match", [
    ({"optimizer": "lbfgs"}, "optimizer='lbfgs'.*sgd, adam, adamw, rmsprop"),
    ({"schedule": "linear"}, "schedule='linear'.*cosine"),
    ({"schedule": "step:2"}, "schedule='step:2'"),
    ({"schedule": "warmup:-5"}, "schedule='warmup:-5'"),
    ({"clip": "norm:abc"}, "not a number"),
    ({"clip": "clamp:1"}, "unknown clipping method"),
    ({"lr": 0}, "lr must be"),
    ({"epochs": 0}, "epochs must be"),
    ({"batch_size": 1.5}, "batch_size must be"),
    ({"augment": "no"}, "augment must be True or False"),  # a string is not taken as truthy
    ({"amp": "yes"}, "amp must be True or False"),
])
def test_bad_arguments_raise_clear_errors(data, kw, match):
    with pytest.raises(ValueError, match=match):
        fit(data=data, **_small(**kw))


# Each refused before the model is built or a batch made (and with a ValueError naming it, never a
# bare TypeError or OverflowError from inside torch, nor a silent run with a meaningless setting).
NAMED_BEFORE_ANY_WORK = [
    ({"momentum": "0.9"}, r"momentum must be a finite number in \[0, 1\), got '0.9'"),
    ({"momentum": float("nan")}, r"momentum must be a finite number in \[0, 1\), got nan"),
    ({"momentum": 5.0}, r"momentum must be .*got 5.0"),
    ({"momentum": 1.0}, r"momentum must be .*got 1.0"),
    ({"momentum": -0.1}, r"momentum must be .*got -0.1"),
    ({"weight_decay": "0"}, "weight_decay must be a finite number >= 0, got '0'"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
    ({"schedule": "warmup:inf"}, "schedule='warmup:inf'"),
    ({"schedule": "warmup:0.5"}, "schedule='warmup:0.5'.*whole warm-up steps"),
    ({"schedule": "step:1:inf"}, "schedule='step:1:inf'"),
    ({"schedule": "plateau:2:1.5"}, "schedule='plateau:2:1.5'.*plateau factor below 1"),
    ({"model_kw": [1]}, r"model_kw must be None or a dict of 'seed_cnn' options \(width\), got \[1\]"),
    ({"seed": -1}, "seed must be an int from 0 to"),
    ({"seed": 2**64}, "seed must be an int from 0 to"),
    ({"seed": 1.0}, "seed must be an int from 0 to"),
    ({"max_steps": 0}, "max_steps must be None or an int >= 1"),
    ({"progress": "no"}, "progress must be True or False"),
    ({"model": None}, "model must be an nn.Module or a model name"),
]


@pytest.mark.parametrize("kw, match", NAMED_BEFORE_ANY_WORK, ids=[str(kw) for kw, _ in NAMED_BEFORE_ANY_WORK])
def test_bad_settings_are_named_before_any_work(data, monkeypatch, kw, match):
    import gradkit.train

    monkeypatch.setattr(gradkit.train, "build_model", lambda *a, **k: pytest.fail("built the model"))
    with pytest.raises(ValueError, match=match):
        fit(data=data, **_small(**kw))


@pytest.mark.parametrize("kw, match", [(kw, m) for kw, m in NAMED_BEFORE_ANY_WORK if "schedule" not in kw],
                         ids=[str(kw) for kw, _ in NAMED_BEFORE_ANY_WORK if "schedule" not in kw])
def test_fit_stacked_shares_the_checks(data, monkeypatch, kw, match):
    import gradkit.stacked

    monkeypatch.setattr(gradkit.stacked, "build_model", lambda *a, **k: pytest.fail("built the model"))
    with pytest.raises(ValueError, match=match):
        gradkit.stacked.fit_stacked(data=data, clips=["none", "norm:1"], **_small(**kw))


def test_bad_data_and_model_raise(data):
    with pytest.raises(ValueError, match="data must be a gradkit.data.Dataset"):
        fit("seed_cnn", (data.train_x, data.train_y), progress=False)
    with pytest.raises(ValueError, match="model='vgg' is not a model name"):
        fit("vgg", data, progress=False)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_other_optimizers_train(data, optimizer):
    h = fit(_linear(), data, epochs=2, lr=1e-3, optimizer=optimizer, batch_size=32, progress=False)
    assert not h.diverged and sum(h.loss[-3:]) < sum(h.loss[:3])


def test_schedules_set_the_recorded_learning_rate(data):
    kw = {"epochs": 2, "batch_size": 64, "lr": 0.1, "progress": False}  # 4 steps per epoch, 8 in all
    cosine = fit(_linear(), data, schedule="cosine", **kw).lr
    assert cosine == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])
    assert fit(_linear(), data, schedule="step:1:0.5", **kw).lr == pytest.approx([0.1] * 4 + [0.05] * 4)
    assert fit(_linear(), data, schedule="warmup:4", **kw).lr == pytest.approx([0.025, 0.05, 0.075, 0.1] + [0.1] * 4)
    wc = fit(_linear(), data, schedule="warmup_cosine:2", **kw).lr
    assert wc == pytest.approx([0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * t / 6)) for t in range(6)])


def test_plateau_schedule_cuts_the_rate_when_validation_loss_stalls():
    from gradkit.data import synthetic

    # lr=1e-7 for one step an epoch cannot move the validation loss by 0.01%: epoch 1 sets the best, epochs 2 and 3 are "bad",
    # so with patience 1 the rate is multiplied by 0.5 after epoch 3.
    data = synthetic(n=256, n_test=128, n_val=128, seed=0)
    h = fit(_linear(), data, epochs=4, lr=1e-7, schedule="plateau:1:0.5", batch_size=256, progress=False)
    assert h.lr == pytest.approx([1e-7, 1e-7, 1e-7, 5e-8], rel=1e-9, abs=0)
    assert len(h.val_loss) == len(h.val_acc) == len(h.test_acc) == 4


def test_fit_does_not_clip_unless_asked(data):
    h = fit(data=data, epochs=1, max_steps=3, batch_size=64, **_small())
    assert h.config["clip"] == "none" and not any(h.clipped)
    assert h.grad_norm_before == h.grad_norm_after


def test_step_norm_is_the_update_actually_taken():
    from gradkit.data import synthetic

    data = synthetic(n=64, n_test=32, seed=0)
    # Plain SGD, no clipping: ||w_after - w_before|| = lr * ||g||.
    h = fit(_linear(), data, epochs=1, lr=0.1, momentum=0.0, batch_size=16, progress=False)
    assert h.step_norm == pytest.approx([0.1 * g for g in h.grad_norm_before], rel=1e-4)
    # Momentum 0.9 with norm clipping at c: the first step is lr * c, later ones exceed it but stay
    # below lr * c / (1 - 0.9).
    c, lr = 0.01, 0.1
    h = fit(_linear(), data, epochs=3, lr=lr, clip=f"norm:{c}", batch_size=16, progress=False)
    assert all(h.clipped) and h.step_norm[0] == pytest.approx(lr * c, rel=1e-4)
    assert max(h.step_norm) > 1.5 * lr * c
    assert max(h.step_norm) <= lr * c / (1 - 0.9) * (1 + 1e-4)


def test_amp_bf16_on_cpu_and_constraint_callable(data):
    def zero_last_bias(model):
        model.fc2.bias.zero_()

    h = fit(data=data, epochs=1, max_steps=2, amp=True, constraint=zero_last_bias, batch_size=64, **_small())
    assert all(math.isfinite(v) for v in h.loss) and h.config["amp"] is True
    assert h.config["constraint"] == "zero_last_bias"


def test_constraint_callable_is_applied_after_each_step(data):
    from gradkit.models import SeedCNN

    model = SeedCNN(width=0.25)
    fit(model, data, max_steps=2, lr=0.1, constraint=lambda m: m.fc2.bias.zero_(), progress=False)
    assert model.fc2.bias.abs().sum() == 0


def test_constraint_spec_goes_through_remedies(data):
    from gradkit.models import SeedCNN

    model = SeedCNN(width=0.25)
    h = fit(model, data, max_steps=2, lr=0.5, constraint="weight_clip:0.01", progress=False)
    assert h.config["constraint"] == "weight_clip:0.01"
    assert max(p.abs().max().item() for n, p in model.named_parameters() if n.endswith("weight")) <= 0.01


def test_monitor_records_layer_norms_and_update_ratios(data):
    from gradkit.models import SeedCNN

    model = SeedCNN(width=0.25)
    w0 = {n: p.detach().norm().item() for n, p in model.named_parameters()}
    h = fit(model, data, max_steps=5, lr=0.1, clip=None, monitor_every=2, batch_size=32, progress=False)
    assert h.layer_names == list(w0) and h.layer_steps == [0, 2, 4]
    assert len(h.layer_grad_norm) == len(h.update_ratio) == 3 and len(h.layer_grad_norm[0]) == len(w0)
    # the layer norms make up the total: sum_l ||g_l||^2 = ||g||^2
    assert math.sqrt(sum(v * v for v in h.layer_grad_norm[0])) == pytest.approx(h.grad_norm_before[0], rel=1e-5)
    # first SGD step (the momentum buffer starts at g): ||update_l|| / ||w_l|| = lr * ||g_l|| / ||w_l||
    expected = [0.1 * g / w0[n] for g, n in zip(h.layer_grad_norm[0], h.layer_names)]
    assert h.update_ratio[0] == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- figures of the records


def test_grad_norm_trace_and_training_curves_draw_the_records():
    from gradkit import plots

    h = History(config={"clip": "norm:0.5", "lr": 0.01}, loss=[2.3, 2.2, 2.0, 1.9], grad_norm_before=[0.4, 0.6, 2.0, 0.3],
                clipped=[False, True, True, False], train_acc=[0.2, 0.3], test_acc=[0.25, 0.35])
    fig, ax = plots.figure()
    plots.grad_norm_trace(ax, h.grad_norm_before, threshold=0.5, clipped=h.clipped)
    trace, line = ax.get_lines()
    assert list(trace.get_ydata()) == h.grad_norm_before and list(line.get_ydata()) == [0.5, 0.5]
    assert ax.get_yscale() == "log" and ax.get_title() == "50% of steps clipped"
    fig = plots.training_curves([h, History(config={"clip": "none", "lr": 0.01}, loss=[2.3] * 4, test_acc=[0.3],
                                            train_acc=[0.2])])
    acc = fig.axes[1]
    assert [list(l.get_ydata()) for l in acc.get_lines()][:2] == [[25.0, 35.0], [20.0, 30.0]]
    assert acc.get_lines()[0].get_color() == plots.color_for("norm")
    grid = plots.image_grid(torch.zeros(20, 3, 32, 32, dtype=torch.uint8), torch.arange(20) % 10,
                            [str(c) for c in range(10)], per_class=2)
    assert len(grid.axes) == 20 and grid.axes[0].get_title() == "0"
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("kw, match", [({"train": "no"}, "train must be True or False"),
                                       ({"augment": "no"}, "augment must be True or False"),
                                       ({"channels_last": 1}, "channels_last must be True or False"),
                                       ({"seed": -1}, "seed must be an int from 0 to"),
                                       ({"std": (1.0, float("nan"), 1.0)}, "std must be a finite number > 0, got nan"),
                                       ({"mean": (0.0, "x", 0.0)}, "mean must be a finite number, got 'x'")])
def test_the_device_loader_takes_booleans_and_numbers_only(kw, match):
    # A string was taken as truthy: train="no" shuffled, augment="no" cropped and flipped.
    x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.arange(4)
    with pytest.raises(ValueError, match=match):
        DeviceLoader(x, y, 2, device="cpu", **kw)


def test_evaluate_refuses_a_string_amp_and_wrong_arguments(data):
    loader = DeviceLoader(data.test_x, data.test_y, 64, train=False, device="cpu")
    with pytest.raises(ValueError, match="amp must be True or False"):
        evaluate(_linear(), loader, amp="no")
    with pytest.raises(ValueError, match="an nn.Module and a DeviceLoader"):
        evaluate(_linear(), (data.test_x, data.test_y))


def test_numpy_numbers_train_and_save(tmp_path, data):
    # Accepted by the checks, they reached torch (manual_seed refused np.int64) and json (np.float32).
    import numpy as np

    h = fit(data=data, **_small(lr=np.float32(0.05), epochs=np.int64(1), seed=np.int64(3), max_steps=np.int64(2),
                                batch_size=np.int64(64), momentum=np.float64(0.5), model_kw={"width": np.float64(0.25)}))
    back = History.load(h.save(tmp_path / "run.json"))
    assert len(back.loss) == 2 and back.config["seed"] == 3 and type(back.config["lr"]) is float
