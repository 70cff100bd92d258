import copy

import numpy as np
import pytest
import torch

from gradkit import runtime
from gradkit.data import synthetic
from gradkit.models import SeedCNN
from gradkit.suggest import ThresholdSuggestion, suggest_threshold
from gradkit.train import fit


@pytest.fixture(scope="module")
def data():
    return synthetic(n=64, n_test=32, seed=3)


def small_model(seed=0):
    runtime.set_seed(seed)
    return SeedCNN(width=0.125)


def test_suggestions_are_quantiles_of_the_norms_of_an_unclipped_run(data):
    s = suggest_threshold(small_model(), data, steps=10, batch_size=16, lr=0.05)
    # The same training, run by hand: 4 steps an epoch, so 3 epochs cut at step 10.
    h = fit(small_model(), data, epochs=3, lr=0.05, clip="none", batch_size=16, max_steps=10, progress=False)
    assert s.steps == len(h.grad_norm_before) == 10
    np.testing.assert_allclose(s.norms, h.grad_norm_before, rtol=1e-5)
    assert s.median == pytest.approx(float(np.quantile(h.grad_norm_before, 0.5)), rel=1e-5)
    assert s.p90 == pytest.approx(float(np.quantile(h.grad_norm_before, 0.9)), rel=1e-5)
    assert s.quantiles == {0.5: s.median, 0.9: s.p90}
    assert s.config["clip"] == "none" and s.config["lr"] == 0.05


def test_callers_model_is_not_modified(data):
    model = small_model()
    before = copy.deepcopy(model.state_dict())
    suggest_threshold(model, data, steps=5, batch_size=16, lr=0.5)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_other_quantiles_and_clipped_share(data):
    s = suggest_threshold("seed_cnn", data, steps=20, quantiles=(0.25, 0.9), batch_size=16, model_kw={"width": 0.125})
    assert sorted(s.quantiles) == [0.25, 0.9]
    assert s.quantiles[0.25] == pytest.approx(float(np.quantile(s.norms, 0.25)))
    # 20 distinct norms: exactly 2 lie above the interpolated 90th percentile.
    assert len(set(s.norms.tolist())) == 20
    assert s.clipped_share(s.p90) == pytest.approx(0.1)
    assert s.clipped_share(s.norms.max()) == 0.0


def test_plot_marks_each_suggestion(data):
    s = ThresholdSuggestion(norms=np.array([0.5, 1.0, 2.0, 4.0]), quantiles={0.5: 1.5, 0.9: 3.4}, steps=4)
    ax = s.plot()
    xs = sorted(line.get_xdata()[0] for line in ax.lines)
    assert xs == [1.5, 3.4]
    assert sum(p.get_height() for p in ax.patches) == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"quantiles": (0.5, 1.5)}, r"quantiles must be .* in \[0, 1\]"),
    ({"quantiles": ()}, "quantiles must be a non-empty"),
    ({"quantiles": 0.5}, "quantiles must be a non-empty list, got 0.5"),
    ({"quantiles": [float("nan")]}, r"quantiles must be a finite number in \[0, 1\], got nan"),
    ({"quantiles": ["0.5"]}, r"quantiles must be a finite number in \[0, 1\], got '0.5'"),
    ({"quantiles": [0.5, 0.5]}, "quantiles lists 0.5 more than once"),
    ({"steps": "5"}, "steps must be an int >= 1, got '5'"),
    ({"batch_size": "8"}, "batch_size must be an int >= 1, got '8'"),
    ({"progress": "no"}, "progress must be True or False"),
])
def test_bad_arguments_raise(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        suggest_threshold(small_model(), data, **kwargs)


def test_data_must_be_a_dataset():
    with pytest.raises(ValueError, match="data must be a gradkit.data.Dataset"):
        suggest_threshold(small_model(), [1, 2, 3], steps=2)
