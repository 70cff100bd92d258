"""gradkit.history: the run record, its helpers and its JSON file."""

import math

import pytest

from gradkit.history import History
from gradkit.train import fit


@pytest.fixture(scope="module")
def data():
    from gradkit.data import synthetic

    return synthetic(n=256, n_test=128, seed=0)


def _small(**kw):
    return {"model": "seed_cnn", "model_kw": {"width": 0.25}, "progress": False, **kw}


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
