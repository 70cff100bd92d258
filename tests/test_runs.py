"""gradkit.runs: sweeps save one file per run named by a stable id, skip runs on disk, write summary.csv."""

import csv
import json
import math
from pathlib import Path

import pytest

from gradkit import runs
from gradkit.history import History
from gradkit.runs import load_sweep, sweep

SHIPPED = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture(scope="module")
def data():
    from gradkit.data import synthetic

    return synthetic(n=256, n_test=128, seed=0)


def _close(a, b, rtol):
    return all(math.isclose(x, y, rel_tol=rtol, abs_tol=1e-7) for x, y in zip(a, b))


def test_sweep_saves_runs_and_skips_them_the_second_time(tmp_path, data, monkeypatch):
    base = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 2, "batch_size": 64}
    first = sweep(thresholds=[0.1, 1.0], base=base, data=data, results_dir=tmp_path, progress=False)
    assert [h.config["clip"] for h in first] == ["norm:0.1", "norm:1.0"]
    assert len(list(tmp_path.glob("run-*.json"))) == 2

    def no_training(*a, **k):
        raise AssertionError("a run on disk was trained again")

    monkeypatch.setattr(runs, "fit", no_training)
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
    assert runs._run_id(cfg, data) == runs._run_id({**cfg, "lr": 0.01}, data)  # the default, spelled out
    plain = {"model": "seed_cnn"}
    assert runs._run_id(plain, data) == runs._run_id({**plain, "clip": None}, data) == runs._run_id({**plain, "clip": "none"}, data)
    assert runs._run_id(cfg, data) != runs._run_id(cfg, other)
    assert runs._run_id(cfg, data) != runs._run_id({**cfg, "lr": 0.02}, data)
    assert runs._run_id({**cfg, "subset": 100}, None) != runs._run_id({**cfg, "subset": 200}, None)


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


def test_run_ids_do_not_move_when_fit_gains_a_keyword(monkeypatch):
    cfg = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "lr": 0.05, "clip": "norm:1.0", "epochs": 10,
           "subset": 10000, "test_subset": 2000, "data_seed": 0, "val": 1000, "device": "cpu"}
    pinned = runs._run_id(cfg, None)
    assert pinned == "a5cec6857b39"  # pinned: a change here orphans saved runs
    monkeypatch.setitem(runs.FIT_DEFAULTS, "label_smoothing", 0.0)
    assert runs._run_id(cfg, None) == pinned
    assert runs._run_id({**cfg, "label_smoothing": 0.0}, None) == pinned
    assert runs._run_id({**cfg, "label_smoothing": 0.1}, None) != pinned


def test_shipped_run_files_load_and_keep_their_ids():
    files = sorted(SHIPPED.glob("run-*.json"))
    if not files:
        pytest.skip("no shipped runs in results/")
    for path in files[:5]:
        h = History.load(path)
        assert h.config["run_id"] == path.stem.removeprefix("run-") and h.loss


def test_sweep_stacked_writes_sequential_files(data, tmp_path, monkeypatch):
    base = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "batch_size": 64, "device": "cpu"}
    configs = [{"clip": "norm:0.1"}, {"clip": "value:0.01"}, {"clip": "none"},
               {"clip": "agc:0.01"}]  # agc cannot be stacked: trained with fit
    seq = sweep(configs, base=base, data=data, results_dir=tmp_path / "seq", progress=False)
    stk = sweep(configs, base=base, data=data, results_dir=tmp_path / "stk", progress=False, stacked=True)
    names = sorted(p.name for p in (tmp_path / "seq").glob("run-*.json"))
    assert names == sorted(p.name for p in (tmp_path / "stk").glob("run-*.json")) and len(names) == 4
    for a, b in zip(seq, stk):
        assert a.config == b.config
        assert _close(a.loss, b.loss, 1e-3)
    saved = json.loads((tmp_path / "stk" / names[0]).read_text())
    assert set(saved) == set(json.loads((tmp_path / "seq" / names[0]).read_text()))

    def refuse(*args, **kwargs):
        raise AssertionError("a run on disk was trained again")

    monkeypatch.setattr(runs, "fit", refuse)
    monkeypatch.setattr(runs, "fit_stacked", refuse)
    again = sweep(configs, base=base, data=data, results_dir=tmp_path / "stk", progress=False, stacked=True)
    assert [h.config["run_id"] for h in again] == [h.config["run_id"] for h in stk]
    assert len(sweep(configs, base=base, data=data, results_dir=tmp_path / "stk", progress=False)) == 4


def test_shipped_run_ids_are_recomputed_from_their_configs():
    files = sorted(SHIPPED.glob("run-*.json"))
    if not files:
        pytest.skip("no shipped runs in results/")
    for path in files[:10]:
        cfg = {k: v for k, v in History.load(path).config.items() if k != "run_id"}
        assert runs._run_id(cfg, None) == path.stem.removeprefix("run-")


def _one_run(data, tmp_path):
    return sweep(configs=[{"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 1, "batch_size": 64}],
                 data=data, results_dir=tmp_path, progress=False)[0]


def test_a_cut_off_run_file_is_set_aside_with_a_warning_and_trained_again(tmp_path, data):
    first = _one_run(data, tmp_path)
    path = tmp_path / f"run-{first.config['run_id']}.json"
    path.write_text(path.read_text()[:100])  # a kill or a full disk in the middle of a write
    with pytest.warns(UserWarning, match=path.name):
        assert load_sweep(tmp_path) == []
    assert (tmp_path / (path.name + ".corrupt")).exists()
    again = _one_run(data, tmp_path)
    assert again.loss == first.loss and History.load(path).loss == first.loss


def test_a_foreign_json_file_is_set_aside_not_fatal(tmp_path, data):
    (tmp_path / "run-000000000000.json").write_text('{"hello": 1}')
    with pytest.warns(UserWarning, match="run-000000000000.json"):
        assert len(sweep(thresholds=[1.0], base={"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 1},
                         data=data, results_dir=tmp_path, progress=False)) == 1


def _by_hand(clip="none", lr=0.1, loss=(2.3, 2.0), **fields):
    """A History as fit writes it (every setting in config, one entry per step in each step field)."""
    n = len(loss)
    steps = {"grad_norm_before": [1.0] * n, "grad_norm_after": [1.0] * n, "clipped": [False] * n, "lr": [lr] * n}
    config = {**runs.RUN_DEFAULTS, "model": "seed_cnn", "model_kw": {}, "clip": clip, "lr": lr}
    return History(config=config, loss=list(loss), **{**steps, **fields})


@pytest.mark.parametrize("change", [{"config": None}, {"config": []}, {"nonfinite": {"foo/3": "inf"}},
                                    {"nonfinite": "x"}, {"date": 5}, {"loss": "abc"}, {"config": {}}],
                         ids=["config-null", "config-list", "nonfinite-path", "nonfinite-str", "date-int", "loss-str",
                              "config-empty"])
def test_a_run_file_with_wrong_types_is_set_aside_and_trained_again(tmp_path, data, change):
    first = _one_run(data, tmp_path)
    path = tmp_path / f"run-{first.config['run_id']}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.warns(UserWarning, match=f"{path.name}.*not a gradkit History: field '(config|nonfinite|date|loss)'"):
        again = _one_run(data, tmp_path)
    assert again.loss == first.loss and History.load(path).loss == first.loss
    assert (tmp_path / (path.name + ".corrupt")).exists()
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [r["run_id"] for r in rows] == [first.config["run_id"]]


def test_an_empty_object_is_not_taken_for_a_run(tmp_path, data):
    (tmp_path / "run-000000000000.json").write_text("{}")
    with pytest.warns(UserWarning, match="run-000000000000.json.*'config' is missing"):
        assert load_sweep(tmp_path) == []


def test_a_run_file_copied_under_another_name_is_set_aside(tmp_path, data):
    first = _one_run(data, tmp_path)
    copy = tmp_path / "run-aaaaaaaaaaaa.json"
    copy.write_text((tmp_path / f"run-{first.config['run_id']}.json").read_text())
    with pytest.warns(UserWarning, match=f"run-aaaaaaaaaaaa.json.*holds run '{first.config['run_id']}'"):
        assert [h.config["run_id"] for h in load_sweep(tmp_path)] == [first.config["run_id"]]
    assert not copy.exists()


def test_history_save_is_atomic_and_strict_json(tmp_path, monkeypatch):
    h = _by_hand(loss=[2.3, 3.0], grad_norm_before=[float("inf"), 1.0], layer_names=["a", "b"], layer_steps=[0],
                 layer_grad_norm=[[1.0, float("nan")]], update_ratio=[[0.1, 0.2]])
    path = h.save(tmp_path / "r.json")
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = History.load(path)
    assert back.grad_norm_before[0] == math.inf and math.isnan(back.layer_grad_norm[0][1])

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr("gradkit.history.os.replace", broken_replace)
    with pytest.raises(OSError):
        _by_hand(loss=[1.0]).save(path)
    assert History.load(path).loss == [2.3, 3.0]  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # and no temporary file is left


def test_loss_blow_up_without_nan_is_flagged_unstable_in_summaries(tmp_path):
    ok = _by_hand(lr=0.1, loss=[2.3, 2.0, 1.5], date="1")
    blown = _by_hand(lr=1e6, loss=[2.3, 7e23, 5e20], date="2")
    nan = _by_hand(lr=1e9, loss=[2.3], diverged=True, diverged_step=1, date="3")
    assert [h.status for h in (ok, blown, nan)] == ["ok", "unstable", "diverged"]
    for i, h in enumerate((ok, blown, nan)):
        h.save(tmp_path / f"run-{i:012d}.json")
    rows = list(csv.DictReader(open(runs.write_summary(tmp_path))))
    assert [r["status"] for r in rows] == ["ok", "unstable", "diverged"]
    assert [h.status for h in load_sweep(tmp_path)] == ["ok", "unstable", "diverged"]


def test_two_sweeps_into_one_folder_both_end_up_in_the_summary(tmp_path, data):
    import threading

    base = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 1, "batch_size": 64}
    threads = [threading.Thread(target=sweep, kwargs=dict(thresholds=t, base=base, data=data, results_dir=tmp_path,
                                                           progress=False)) for t in ([0.1, 0.2], [0.3, 0.4])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert sorted(r["clip"] for r in rows) == ["norm:0.1", "norm:0.2", "norm:0.3", "norm:0.4"]


REFUSED = [
    ({"thresholds": ["a"]}, "thresholds must be numbers > 0; got 'a'"),
    ({"thresholds": [-1.0]}, "thresholds must be numbers > 0"),
    ({"thresholds": 1.0}, "thresholds must be a non-empty list, got 1.0"),
    ({"thresholds": "1.0"}, "thresholds must be a non-empty list"),
    ({"thresholds": [1.0, 1.0]}, "thresholds lists 1.0 more than once"),
    ({"thresholds": [1.0], "method": "nrom"}, "method='nrom' is not accepted"),
    ({"thresholds": [1.0], "results_dir": "FILE"}, "results_dir=.* is a file"),
    ({"thresholds": [1.0], "results_dir": "FILE/sub"}, "results_dir=.*FILE/sub' cannot be made: .* is a file"),
    ({"thresholds": [1.0], "results_dir": 5}, "results_dir must be a folder path"),
    ({"thresholds": [1.0], "stacked": "no"}, "stacked must be True or False, got 'no'"),
    ({"thresholds": [1.0], "progress": "no"}, "progress must be True or False, got 'no'"),
    ({"thresholds": [1.0], "base": [1]}, r"base must be None or a dict"),
    ({"thresholds": [1.0], "data": "notdata"}, "data must be a gradkit.data.Dataset"),
    ({"configs": {"model": "seed_cnn"}}, r"configs must be a non-empty list of dicts .*\(wrap one config in a list\)"),
    ({"configs": "abc"}, "configs must be a non-empty list of dicts"),
    ({"configs": []}, "configs must be a non-empty list of dicts"),
    # a bad value in the second config is found before the first one trains
    ({"configs": [{}, {"lr": "x"}]}, r"configs\[1\]: lr must be a finite number > 0, got 'x'"),
    ({"configs": [{}, {"momentum": 1.5}]}, r"configs\[1\]: momentum must be"),
    ({"configs": [{}, {"model_kw": {"width": "x"}}]}, r"configs\[1\]: model_kw=\{'width': 'x'\} does not build"),
    ({"configs": [{}, {"model_kw": {"widht": 1}}]}, r"configs\[1\]: model_kw \['widht'\] are not options"),
    ({"configs": [{}, {"clip": "norm:0"}]}, r"configs\[1\]: spec='norm:0'"),
    ({"configs": [{"clip": "norm:1"}, {"clip": 1.0}]}, "configs 0 and 1 are the same run"),
    ({"configs": [{"subset": "5"}]}, r"configs\[0\]: config 'subset' must be None or an int >= 1, got '5'"),
    ({"configs": [{}, {"model_kw": [1]}]}, r"configs\[1\]: model_kw must be None or a dict"),
    ({"configs": [{}, {"device": "gpu"}]}, r"configs\[1\]: device='gpu' is not a device"),
    ({"configs": [{"model": "vgg"}]}, r"configs\[0\]: model='vgg' is not a model name"),
    ({"configs": [{"subset": 100}]}, r"config 'subset'=100 does not describe the data given \(subset 256\)"),
    ({"configs": [{"val": 10}]}, r"config 'val'=10 does not describe the data given \(val 0\)"),
    ({"configs": [{"data_seed": 3}]}, "config 'data_seed'=3 is not used with data="),
]


@pytest.mark.parametrize("kw, message", REFUSED, ids=[str(kw)[:60] for kw, _ in REFUSED])
def test_sweep_refuses_bad_input_before_any_work(tmp_path, data, monkeypatch, kw, message):
    (tmp_path / "FILE").write_text("x")
    if isinstance(kw.get("results_dir"), str):
        kw = {**kw, "results_dir": tmp_path / kw["results_dir"]}
    kw = {"results_dir": tmp_path / "out", "base": {"model": "seed_cnn", "model_kw": {"width": 0.25}}, "data": data,
          "progress": False, **kw}
    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("trained a run"))
    monkeypatch.setattr(runs, "fit_stacked", lambda *a, **k: pytest.fail("trained a run"))
    with pytest.raises(ValueError, match=message):
        sweep(**kw)
    assert not (tmp_path / "out").exists()


def test_data_settings_that_describe_the_data_given_are_accepted(tmp_path, data):
    [h] = sweep(configs=[{"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 1, "subset": 256,
                          "test_subset": 128, "val": 0}], data=data, results_dir=tmp_path, progress=False)
    assert len(h.loss) == 1 and h.config["subset"] is None  # with data=, the data settings are not the run's


@pytest.mark.parametrize("where", ["FILE", "FILE/sub"])
def test_grid_refuses_an_out_folder_that_cannot_be_made_before_any_work(tmp_path, monkeypatch, where):
    from gradkit import grid

    (tmp_path / "FILE").write_text("x")
    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("trained a run"))
    with pytest.raises(ValueError, match="results_dir=.*(is a file|cannot be made)"):
        grid.run_grid(thresholds=[1.0], data="synthetic", max_steps=1, out=tmp_path / where, workers=1, progress=False)


@pytest.mark.parametrize("where", [5, None, b"/tmp", "FILE", "missing"])
def test_load_sweep_names_a_folder_it_cannot_read(tmp_path, where):
    (tmp_path / "FILE").write_text("x")
    where = tmp_path / where if isinstance(where, str) else where
    with pytest.raises(ValueError, match="results_dir"):
        load_sweep(where)


def test_unknown_model_options_name_the_accepted_ones(data):
    from gradkit.train import fit

    with pytest.raises(ValueError, match="accepted: width"):
        fit("seed_cnn", data, model_kw={"widht": 0.5}, progress=False)
    with pytest.raises(ValueError, match="augment"):
        fit("seed_cnn", data, augment="no", progress=False)
    with pytest.raises(ValueError, match="amp"):
        fit("seed_cnn", data, amp="yes", progress=False)


def test_the_frozen_run_defaults_are_still_fits_defaults():
    # A default changed in fit without RUN_DEFAULTS would give new runs the old ids: change both, and
    # migrate the shipped run files (results/README.md says how).
    import inspect

    from gradkit.train import fit

    live = {k: p.default for k, p in inspect.signature(fit).parameters.items()}
    assert {k: live[k] for k in runs.RUN_DEFAULTS} == runs.RUN_DEFAULTS


def test_numpy_numbers_name_the_same_run_and_save_as_json(tmp_path, data):
    import numpy as np

    cfg = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "max_steps": 1, "batch_size": 64, "lr": 0.5}
    as_numpy = {**cfg, "model_kw": {"width": np.float64(0.25)}, "max_steps": np.int64(1), "batch_size": np.int64(64),
                "lr": np.float64(0.5), "seed": np.int64(0)}
    assert runs._run_id(as_numpy, data) == runs._run_id(cfg, data)
    [h] = sweep(configs=[as_numpy], data=data, results_dir=tmp_path, progress=False)  # saving raised TypeError
    saved = History.load(tmp_path / f"run-{h.config['run_id']}.json").config
    assert type(saved["lr"]) is float and type(saved["batch_size"]) is int and saved["model_kw"] == {"width": 0.25}
