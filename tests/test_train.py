"""gradkit.train: the device loader, fit (clipping records, divergence, schedules), History JSON, sweeps."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit import train
from gradkit.train import DeviceLoader, History, fit, load_sweep, sweep

CPU = torch.device("cpu")


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n)


def _raw_loader(x, y, **kw):
    # std = 1/255 and mean 0 make the normalised output equal the pixel values, so crops compare exactly.
    return DeviceLoader(x, y, mean=(0.0,) * 3, std=(1 / 255,) * 3, device="cpu", **kw)


# ---------------------------------------------------------------- DeviceLoader


def test_loader_shapes_and_length():
    x, y = _images(70)
    loader = _raw_loader(x, y, batch_size=32, train=True)
    batches = list(loader)
    assert len(loader) == 3
    assert [b[0].shape for b in batches] == [(32, 3, 32, 32), (32, 3, 32, 32), (6, 3, 32, 32)]
    assert all(b[0].dtype == torch.float32 and b[1].dtype == torch.long for b in batches)
    # train=True shuffles: every image exactly once per epoch, not in order
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(70)) and seen.tolist() != list(range(70))


def test_loader_crop_is_a_shifted_original_with_zero_border_and_flip_is_exact():
    x, y = _images(64)
    padded = F.pad(x, (4, 4, 4, 4))
    offsets, flips = set(), set()
    for xb, yb in _raw_loader(x, y, batch_size=16, train=True):
        for out, i in zip(xb, yb.tolist()):
            found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                     if torch.equal(out, _crop(padded[i], dy, dx, f))]
            assert found, f"image {i} is no crop/flip of its padded original"
            dy, dx, f = found[0]
            offsets.add((dy, dx))
            flips.add(f)
            # the border that came from padding is zero, the rest is the original shifted by (dy-4, dx-4)
            img = out.flip(-1) if f else out
            if dy < 4:
                assert img[:, : 4 - dy].abs().sum() == 0
            assert torch.equal(img[:, max(0, 4 - dy):32 - max(0, dy - 4), max(0, 4 - dx):32 - max(0, dx - 4)],
                               x[i][:, max(0, dy - 4):32 - max(0, 4 - dy), max(0, dx - 4):32 - max(0, 4 - dx)].float())
    assert flips == {False, True}
    assert len(offsets) > 20  # 64 images over 81 offsets: per-image randomness, not one offset per batch


def _crop(padded_img, dy, dx, flip):
    crop = padded_img[:, dy:dy + 32, dx:dx + 32].float()
    return crop.flip(-1) if flip else crop


def test_loader_channels_last_changes_layout_not_values():
    x, y = _images(16)
    a = next(iter(_raw_loader(x, y, batch_size=8, train=True, seed=3, channels_last=True)))[0]
    b = next(iter(_raw_loader(x, y, batch_size=8, train=True, seed=3)))[0]
    assert a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous()
    assert torch.equal(a, b)


def test_loader_eval_has_no_augmentation_and_keeps_order():
    x, y = _images(50)
    batches = list(_raw_loader(x, y, batch_size=20, train=False))
    assert torch.equal(torch.cat([b[0] for b in batches]), x.float())
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_loader_shuffle_without_augment_returns_the_images_unchanged():
    x, y = _images(40)
    for xb, yb in _raw_loader(x, y, batch_size=16, train=True, augment=False):
        assert torch.equal(xb, x[yb].float())


def test_loader_normalisation_matches_torchvision():
    from torchvision.transforms import Normalize

    x, y = _images(8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    xb, _ = next(iter(DeviceLoader(x, y, 8, train=False, mean=mean, std=std, device="cpu")))
    expected = Normalize(mean, std)(x.float() / 255)
    assert torch.allclose(xb, expected, atol=1e-5)


def test_loader_same_seed_same_batches_other_seed_other_batches():
    x, y = _images(48)

    def epochs(seed):
        loader = _raw_loader(x, y, batch_size=16, train=True, seed=seed)
        return [torch.cat([b[0] for b in loader]) for _ in range(2)]

    a, b, c = epochs(1), epochs(1), epochs(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])  # a new order and new crops every epoch
    assert not torch.equal(a[0], c[0])


def test_loader_rejects_bad_input():
    x, y = _images(4)
    with pytest.raises(ValueError, match="x_uint8"):
        DeviceLoader(x.float(), y, 2, device="cpu")
    with pytest.raises(ValueError, match="y must"):
        DeviceLoader(x, y[:3], 2, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(x, y, 0, device="cpu")


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
])
def test_bad_arguments_raise_clear_errors(data, kw, match):
    with pytest.raises(ValueError, match=match):
        fit(data=data, **_small(**kw))


def test_bad_data_and_model_raise(data):
    with pytest.raises(ValueError, match="data must be a gradkit.data.Dataset"):
        fit("seed_cnn", (data.train_x, data.train_y), progress=False)
    with pytest.raises(ValueError, match="name='vgg'"):
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


# ---------------------------------------------------------------- History


def test_history_json_round_trip(tmp_path, data):
    h = fit(data=data, epochs=1, max_steps=3, batch_size=64, monitor_every=1, **_small())
    assert len(h.update_ratio) == 3
    path = h.save(tmp_path / "sub" / "run.json")
    back = History.load(path)
    assert back == h
    assert back.final_test_acc == h.final_test_acc and back.label == h.label


def test_history_helpers_by_hand():
    h = History(config={"clip": "value:0.1", "lr": 0.05}, clipped=[True, True, False, False, False],
                test_acc=[0.3, 0.5, 0.4])
    assert h.clip_rate == 0.4
    assert h.label == "value clipping, c=0.1, lr=0.05"
    assert h.final_test_acc == 0.4 and h.best_test_acc == 0.5
    assert math.isnan(History().clip_rate) and History().final_test_acc is None


def test_history_load_rejects_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"loss": [1.0], "weights": 3}')
    with pytest.raises(ValueError, match="not a gradkit History"):
        History.load(path)


# ---------------------------------------------------------------- sweep


def test_sweep_saves_runs_and_skips_them_the_second_time(tmp_path, data, monkeypatch):
    base = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 2, "batch_size": 64}
    first = sweep(thresholds=[0.1, 1.0], base=base, data=data, results_dir=tmp_path, progress=False)
    assert [h.config["clip"] for h in first] == ["norm:0.1", "norm:1.0"]
    assert len(list(tmp_path.glob("run-*.json"))) == 2

    def no_training(*a, **k):
        raise AssertionError("a run on disk was trained again")

    monkeypatch.setattr(train, "fit", no_training)
    # "norm:1" and 1.0 name the same runs as "norm:1.0": the file name hashes the canonical config
    again = sweep(configs=[{**base, "clip": "norm:0.1"}, {**base, "clip": 1}], data=data,
                  results_dir=tmp_path, progress=False)
    assert [h.loss for h in again] == [h.loss for h in first]
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert len(rows) == 2 and {r["clip"] for r in rows} == {"norm:0.1", "norm:1.0"}
    assert all(r["synthetic"] == "True" and "synthetic" in r["label"] for r in rows)
    assert len(load_sweep(tmp_path)) == 2


def test_sweep_run_ids_change_with_data_and_settings(data):
    from gradkit.data import synthetic

    cfg = {"model": "seed_cnn", "clip": "norm:1"}
    other = synthetic(n=256, n_test=128, seed=1)
    assert train._run_id(cfg, data) == train._run_id({**cfg, "lr": 0.01}, data)  # the default, spelled out
    plain = {"model": "seed_cnn"}
    assert train._run_id(plain, data) == train._run_id({**plain, "clip": None}, data) == train._run_id({**plain, "clip": "none"}, data)
    assert train._run_id(cfg, data) != train._run_id(cfg, other)
    assert train._run_id(cfg, data) != train._run_id({**cfg, "lr": 0.02}, data)
    assert train._run_id({**cfg, "subset": 100}, None) != train._run_id({**cfg, "subset": 200}, None)


def test_sweep_rejects_bad_configs(tmp_path, data):
    with pytest.raises(ValueError, match="exactly one of configs"):
        sweep(data=data, results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\['learning_rate'\] are not accepted"):
        sweep(configs=[{"model": "seed_cnn", "learning_rate": 0.1}], data=data, results_dir=tmp_path)
    with pytest.raises(ValueError, match="needs 'model'"):
        sweep(configs=[{"clip": "norm:1"}], data=data, results_dir=tmp_path)


def test_sweep_loads_cifar10_once_per_data_setting(tmp_path, monkeypatch, data):
    import gradkit.data

    calls = []

    def fake_cifar10(subset=None, test_subset=None, seed=0, device="auto", **kw):
        calls.append((subset, test_subset, seed))
        return data

    monkeypatch.setattr(gradkit.data, "cifar10", fake_cifar10)
    base = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 1, "batch_size": 64}
    runs = sweep(configs=[{**base, "subset": 100, "clip": "norm:1"}, {**base, "subset": 100, "clip": "norm:2"},
                          {**base, "subset": 200, "test_subset": 50, "seed": 3}], results_dir=tmp_path, progress=False)
    assert calls == [(100, None, 0), (200, 50, 3)]
    assert [h.config["subset"] for h in runs] == [100, 100, 200] and runs[2].config["data_seed"] == 3


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


def test_run_ids_do_not_move_when_fit_gains_a_keyword(monkeypatch):
    cfg = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "lr": 0.05, "clip": "norm:1.0", "epochs": 10,
           "subset": 10000, "test_subset": 2000, "data_seed": 0, "val": 1000, "device": "cpu"}
    pinned = train._run_id(cfg, None)
    assert pinned == "a5cec6857b39"  # pinned: a change here orphans saved runs
    monkeypatch.setitem(train.FIT_DEFAULTS, "label_smoothing", 0.0)
    assert train._run_id(cfg, None) == pinned
    assert train._run_id({**cfg, "label_smoothing": 0.0}, None) == pinned
    assert train._run_id({**cfg, "label_smoothing": 0.1}, None) != pinned
