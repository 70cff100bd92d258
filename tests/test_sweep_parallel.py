"""Parallel sweeps: processes on this machine and a Dask LocalCluster write exactly the run files and
summary of the sequential sweep (same ids, same numbers on the CPU), a killed worker loses only its
run, an interrupted sweep resumes, and ``python -m gradkit sweep`` refuses bad values before any work."""

import concurrent.futures as cf
import csv
import json
import os
import shutil
import threading
import time

import pytest
import torch

from gradkit import runs
from gradkit.__main__ import main
from gradkit.data import synthetic
from gradkit.runs import sweep

# Timing fields differ from run to run; every other field (losses, norms, accuracies) must be equal.
TIMING = ("date", "seconds", "epoch_seconds")
BASE = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "batch_size": 64, "epochs": 1, "lr": 0.05, "device": "cpu"}
THRESHOLDS = [0.1, 1.0, 10.0]


@pytest.fixture(scope="module")
def data():
    return synthetic(n=128, n_test=64, seed=0)


@pytest.fixture
def one_thread():
    """Torch on one thread here, as in every worker: a different thread count may sum in another order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sequential(data, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("sequential")
        sweep(thresholds=THRESHOLDS, base=BASE, data=data, results_dir=folder, progress=False)
    finally:
        torch.set_num_threads(before)
    return folder


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as c:
        yield c


def run_files(folder):
    """``{file name: contents without timing}`` of every run file in ``folder``."""
    out = {}
    for path in sorted(folder.glob("run-*.json")):
        raw = json.loads(path.read_text())
        out[path.name] = {k: v for k, v in raw.items() if k not in TIMING}
    return out


def summary_rows(folder):
    """summary.csv's rows by run id, without the seconds column."""
    rows = csv.DictReader(open(folder / "summary.csv"))
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=lambda r: r["run_id"])


def assert_same_sweep(folder, sequential):
    assert run_files(folder) == run_files(sequential) and len(run_files(folder)) == len(THRESHOLDS)
    assert summary_rows(folder) == summary_rows(sequential)


def test_local_cluster_sweep_writes_the_sequential_files_and_numbers(client, data, sequential, tmp_path):
    got = sweep(thresholds=THRESHOLDS, base=BASE, data=data, results_dir=tmp_path, progress=False, executor=client)
    assert [h.config["clip"] for h in got] == ["norm:0.1", "norm:1.0", "norm:10.0"]
    assert_same_sweep(tmp_path, sequential)
    assert got[0].loss and got[0].test_acc  # the runs trained: the comparison above compared numbers


def test_a_killed_dask_worker_loses_only_its_run(client, data, sequential, tmp_path):
    pids = client.run(os.getpid)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("runs", sweep(
        thresholds=THRESHOLDS, base=BASE, data=data, results_dir=tmp_path, progress=False, executor=client)))
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline:
        busy = [w for w, keys in client.processing().items() if keys and w in pids]
        if busy:
            killed = pids[busy[0]]
            os.kill(killed, 9)
        time.sleep(0.02)
    thread.join(timeout=120)
    assert killed is not None and not thread.is_alive()
    assert len(result["runs"]) == len(THRESHOLDS)
    assert_same_sweep(tmp_path, sequential)
    # The nanny restarts the killed worker; the next test must not start while only one worker is up,
    # or its tasks get both cores (2 torch threads sum in another order than the sequential sweep's 1).
    client.wait_for_workers(2, timeout=120)
    assert killed not in client.run(os.getpid).values()


def test_an_interrupted_dask_sweep_resumes_from_the_saved_runs(client, data, sequential, tmp_path):
    kept = sorted(sequential.glob("run-*.json"))[:2]
    for path in kept:
        raw = json.loads(path.read_text())
        raw["date"] = "kept from the interrupted sweep"
        (tmp_path / path.name).write_text(json.dumps(raw))
    sweep(thresholds=THRESHOLDS, base=BASE, data=data, results_dir=tmp_path, progress=False, executor=client)
    assert all(json.loads((tmp_path / p.name).read_text())["date"] == "kept from the interrupted sweep" for p in kept)
    assert run_files(tmp_path) == run_files(sequential)


def test_processes_on_this_machine_from_the_command_line_write_the_sequential_files(tmp_path, one_thread, capsys):
    args = ["sweep", "--data", "synthetic", "--subset", "128", "--test-subset", "64", "--model-option", "width=0.25",
            "--thresholds", "1,10", "--lrs", "0.05", "--batch-size", "64", "--max-steps", "2", "--device", "cpu",
            "--no-progress"]
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "seq")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "par")]) == 0  # 2 cores: 1 torch thread each
    out = capsys.readouterr().out
    assert "norm:10.0" in out and "3 runs (3 trained now, 0 loaded" in out
    assert run_files(tmp_path / "par") == run_files(tmp_path / "seq") and len(run_files(tmp_path / "seq")) == 3
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "par")]) == 0
    assert "3 runs (0 trained now, 3 loaded" in capsys.readouterr().out


class FlakyExecutor(cf.ThreadPoolExecutor):
    """A thread pool whose tasks fail as a lost worker would: the first ``fails`` submissions of a
    config whose clip is in ``flaky`` raise instead of running (``forever``: every submission)."""

    def __init__(self, flaky, fails=1, error=RuntimeError("worker lost")):
        super().__init__(2)
        self.flaky, self.fails, self.error, self.calls = flaky, fails, error, {}

    def submit(self, fn, cfg, *args):
        n = self.calls[cfg["clip"]] = self.calls.get(cfg["clip"], 0) + 1
        if cfg["clip"] in self.flaky and n <= self.fails:
            future = cf.Future()
            future.set_exception(self.error)
            return future
        return super().submit(fn, cfg, *args)


def test_a_lost_run_is_retried_and_one_that_keeps_failing_is_reported_after_the_others(data, tmp_path):
    base = {**BASE, "max_steps": 1, "epochs": 1}
    with FlakyExecutor({"norm:0.1"}, fails=1) as ex:
        assert len(sweep(thresholds=[0.1, 1.0], base=base, data=data, results_dir=tmp_path / "a", executor=ex,
                         progress=False)) == 2
    assert ex.calls == {"norm:0.1": 2, "norm:1.0": 1}
    with FlakyExecutor({"norm:0.1"}, fails=99) as ex, pytest.raises(RuntimeError, match="1 of 2 runs failed") as err:
        sweep(thresholds=[0.1, 1.0], base=base, data=data, results_dir=tmp_path / "b", executor=ex, progress=False,
              retries=1)
    lost = runs._run_id({**base, "clip": "norm:0.1"}, data)
    assert f"{lost} (2 attempts): RuntimeError: worker lost" in str(err.value) and ex.calls["norm:0.1"] == 2
    assert [p.name for p in (tmp_path / "b").glob("run-*.json")] == [f"run-{runs._run_id({**base, 'clip': 'norm:1.0'}, data)}.json"]
    with FlakyExecutor({"norm:0.1"}, fails=99, error=ValueError("bad setting")) as ex, pytest.raises(RuntimeError):
        sweep(thresholds=[0.1], base=base, data=data, results_dir=tmp_path / "c", executor=ex, progress=False)
    assert ex.calls["norm:0.1"] == 1  # a bad setting fails the same way every time: not retried


def test_a_broken_pool_is_renewed_and_its_runs_sent_again():
    from gradkit.executors import run_tasks

    pools, got = [], {}

    def new_pool():
        pools.append(FlakyExecutor({"boom"}, fails=1 if not pools else 0, error=cf.BrokenExecutor("a worker died")))
        return pools[-1]

    failures = run_tasks(new_pool(), lambda cfg: cfg["clip"] * 2, {k: ({"clip": k},) for k in ("boom", "ok")},
                         got.__setitem__, renew=new_pool, in_flight=1)
    assert failures == [] and got == {"boom": "boomboom", "ok": "okok"} and len(pools) == 2


@pytest.mark.parametrize("args, named", [
    (["--methods", "norm,nrom"], "accepted values: value, norm"),
    (["--thresholds", "0.1,x"], "--thresholds: 'x' is not a number"),
    (["--thresholds", "wide"], "accepted values: default, norm, value, agc"),
    (["--thresholds", "0,1"], "thresholds must be numbers > 0"),
    (["--lrs", "0.1,-1"], "lrs must be a finite number > 0"),
    (["--optimizer", "sdg"], "accepted values: sgd, adam, adamw, rmsprop"),
    (["--model", "vgg"], "accepted values: seed_cnn, plain_cnn, resnet"),
    (["--model-option", "widht=1"], "accepted: width"),
    (["--model-option", "width"], "is not NAME=VALUE"),
    (["--seeds", "0,x"], "--seeds: 'x' is not an integer"),
    (["--epochs", "0"], "epochs must be an int >= 1"),
    (["--workers", "0"], "workers must be an int >= 1"),
    (["--scheduler", "host:8786"], "accepted: protocol://host:port"),
    (["--data", "mnist"], "accepted values: cifar10, synthetic"),
])
def test_the_command_refuses_bad_values_before_any_work(args, named, tmp_path, capsys):
    assert main(["sweep", *args, "--out", str(tmp_path / "out")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_parallel_arguments_are_checked_before_any_work(data, tmp_path):
    with pytest.raises(ValueError, match="executor=.*not accepted"):
        sweep(thresholds=[1.0], base=BASE, data=data, results_dir=tmp_path, executor="tcp://host:8786")
    with pytest.raises(ValueError, match="workers= .*or executor="):
        sweep(thresholds=[1.0], base=BASE, data=data, results_dir=tmp_path, workers=2, executor=cf.ThreadPoolExecutor(1))
    with pytest.raises(ValueError, match="stacked=True"):
        sweep(thresholds=[1.0], base=BASE, data=data, results_dir=tmp_path, workers=2, stacked=True)
    assert not list(tmp_path.iterdir())


def test_dask_is_optional(monkeypatch):
    import sys

    from gradkit import executors

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if Dask were not installed
    with pytest.raises(ValueError, match=r"pip install 'gradkit\[dask\]'"):
        executors.connect("tcp://127.0.0.1:8786")
