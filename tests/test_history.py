"""gradkit.history: the run record, its helpers and its JSON file."""

import json
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


def _good_file(tmp_path, data):
    h = fit(data=data, max_steps=2, batch_size=64, monitor_every=1, **_small())
    h.grad_norm_before[0] = math.inf  # written as null, its meaning kept in "nonfinite"
    return json.loads(h.save(tmp_path / "good.json").read_text())


# A valid JSON file with the wrong types: each must be refused by load, naming the field, never
# accepted (to fail later in a table, a sort or a plot) and never a bare KeyError/TypeError.
BAD_FIELDS = [
    ({"config": None}, "'config' must be a JSON object"),
    ({"config": []}, "'config' must be a JSON object"),
    ({"config": {"lr": 0.1}}, r"'config' lacks the run settings \['model'"),
    ({"config/lr": "abc"}, "'config/lr' must be a number, got 'abc'"),
    ({"config/amp": "no"}, "'config/amp' must be true or false"),
    ({"config/seed": -1}, "'config/seed' must be an int >= 0"),
    ({"config/clip": 5}, "'config/clip' must be a string"),
    ({"nonfinite": {"foo/3": "inf"}}, "'nonfinite' names 'foo/3'"),
    ({"nonfinite": {"loss/0": "inf"}}, "'nonfinite' names 'loss/0', which is not a null"),
    ({"nonfinite": {"grad_norm_before/0": "abc"}}, "'nonfinite' at 'grad_norm_before/0' must be one of inf"),
    ({"nonfinite": "x"}, "'nonfinite' must be a JSON object"),
    ({"date": 5}, "'date' must be a string, got 5"),
    ({"loss": "abc"}, "'loss' must be a list, got 'abc'"),
    ({"loss": [1.0, "abc"]}, "'loss/1' must be a number"),
    ({"loss": [1.0, None]}, "'loss/1' must be a number, got None"),
    ({"clipped": [1, 0]}, "'clipped/0' must be true or false"),
    ({"diverged": "false"}, "'diverged' must be true or false"),
    ({"diverged_step": 1.5}, "'diverged_step' must be an int >= 0"),
    ({"layer_grad_norm": [1.0]}, "'layer_grad_norm/0' must be a list of numbers"),
    ({"lr": [0.01]}, r"fields recorded together have different lengths: \{'loss': 2, .*'lr': 1\}"),
    ({"test_acc": []}, r"different lengths: \{'test_loss': 1, 'test_acc': 0\}"),
    ({"step_norm": [1.0]}, "field 'step_norm' has 1 entries for 2 steps"),
    ({"layer_steps": [0]}, r"different lengths: \{'layer_steps': 1, 'layer_grad_norm': 2"),
    ({"update_ratio": [[1.0], [1.0]]}, "'update_ratio' has rows that are not one number per layer"),
]


@pytest.mark.parametrize("change, message", BAD_FIELDS, ids=[next(iter(c)) for c, _ in BAD_FIELDS])
def test_load_refuses_wrong_types_naming_the_file_and_the_field(tmp_path, data, change, message):
    raw = _good_file(tmp_path, data)
    for key, value in change.items():
        *where, last = key.split("/")
        target = raw
        for part in where:
            target = target[part]
        target[last] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=f"bad.json.*{message}"):
        History.load(path)


@pytest.mark.parametrize("text, message", [("{}", "'config' is missing"), ("null", "not a JSON object"),
                                           ("[1, 2]", "not a JSON object"), ("[" * 100000, "RecursionError")])
def test_load_refuses_other_json(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"x.json.*{message}"):
        History.load(path)


def test_load_puts_non_finite_numbers_back(tmp_path, data):
    raw = _good_file(tmp_path, data)
    assert raw["grad_norm_before"][0] is None and raw["nonfinite"] == {"grad_norm_before/0": "inf"}
    assert History.load(tmp_path / "good.json").grad_norm_before[0] == math.inf


def test_load_refuses_a_pipe_and_an_oversized_file_unread(tmp_path, monkeypatch):
    import os

    import gradkit.history

    os.mkfifo(tmp_path / "pipe.json")  # read_text() would wait for a writer forever
    with pytest.raises(ValueError, match="pipe.json.*not a regular file"):
        History.load(tmp_path / "pipe.json")
    (tmp_path / "big.json").write_text("[" + "1, " * 40 + "1]")
    monkeypatch.setattr(gradkit.history, "MAX_FILE_BYTES", 100)
    with pytest.raises(ValueError, match=r"big.json.*123 bytes, more than any run file \(100 at most\)"):
        History.load(tmp_path / "big.json")
