"""Where the runs of a sweep train: processes on this machine, a Dask cluster, or any executor.

:func:`run_tasks` sends tasks to a ``concurrent.futures``-style executor (``submit(fn, *args)``
returning futures) or to a ``dask.distributed`` ``Client`` and hands each result back to the
caller as it arrives, so the caller can save it at once and an interrupted sweep loses only the
runs in flight. A task that fails (its worker died, or it raised) is sent again up to ``retries``
times; a ``ValueError`` (a bad setting) is not retried. What still failed is returned, never lost
silently. :func:`process_pool` starts processes on this machine, each with its share of the cores
(:func:`threads_per_process`); :func:`connect` reaches a Dask scheduler. Dask is optional
(``pip install gradkit[dask]``): nothing here imports it unless a Dask client or address is used.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

from .checks import check_int

# Scheduler addresses as Dask writes them: a protocol and host[:port] (tcp://10.0.0.5:8786).
ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://[^\s/]+$")


@dataclass
class Failure:
    """A task that failed ``attempts`` times; ``error`` is the last error's text."""

    key: Hashable
    attempts: int
    error: str


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``).

    >>> usable_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def threads_per_process(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes sharing ``cores``: ``max(1, cores // workers)``,
    so the processes together use every core once and none oversubscribes them.

    >>> threads_per_process(2, cores=2), threads_per_process(3, cores=8), threads_per_process(4, cores=2)
    (1, 2, 1)
    """
    check_int("workers", workers)
    return max(1, (cores or usable_cores()) // workers)


def set_threads(threads: int) -> None:
    """Give torch ``threads`` intra-op threads in this process (a worker's initializer)."""
    import torch

    torch.set_num_threads(threads)


def process_pool(workers: int | None = None) -> cf.ProcessPoolExecutor:
    """``workers`` fresh processes (default: one per usable core), each running torch with
    :func:`threads_per_process` threads. Processes are spawned, not forked: a fork of a process
    whose torch thread pool is running can hang.
    """
    workers = usable_cores() if workers is None else check_int("workers", workers)
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=set_threads, initargs=(threads_per_process(workers),))


def check_address(address: str) -> str:
    """``address`` when it is a Dask scheduler address (``tcp://host:8786``, also ``tls://``, ``ucx://``, ``ws://``).

    >>> check_address("tcp://10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    >>> check_address("10.0.0.5")
    Traceback (most recent call last):
    ...
    ValueError: scheduler='10.0.0.5' is not a Dask scheduler address; accepted: protocol://host:port with protocol tcp, tls, ucx, ws, wss or inproc, e.g. tcp://10.0.0.5:8786
    """
    if not isinstance(address, str) or not ADDRESS.match(address):
        raise ValueError(f"scheduler={address!r} is not a Dask scheduler address; accepted: protocol://host:port "
                         "with protocol tcp, tls, ucx, ws, wss or inproc, e.g. tcp://10.0.0.5:8786")
    return address


def connect(address: str, timeout: float = 20.0) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``; a clear error when Dask is not
    installed or the scheduler does not answer within ``timeout`` seconds."""
    check_address(address)
    try:
        from distributed import Client
    except ImportError as err:
        raise ValueError("scheduler= needs Dask: pip install 'gradkit[dask]' (or 'dask[distributed]')") from err
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"scheduler={address!r} did not answer within {timeout:g} s: {err}") from err


def is_dask(executor: Any) -> bool:
    """True when ``executor`` is a ``dask.distributed`` client (checked without importing Dask)."""
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scatter")


def check_executor(executor: Any) -> Any:
    """``executor`` when it is a Dask client or has a ``submit`` method; the error names what is accepted."""
    if not (is_dask(executor) or callable(getattr(executor, "submit", None))):
        raise ValueError(f"executor={executor!r} is not accepted; accepted: a dask.distributed Client or a "
                         "concurrent.futures-style executor (ProcessPoolExecutor, ThreadPoolExecutor, ...)")
    return executor


def dask_threads(client: Any) -> dict[str, int]:
    """``{host: torch threads per task}`` on a Dask cluster: a host's cores divided by the task
    threads of all its workers (at least 1), so a host running 4 one-thread workers on 8 cores gives each task 2."""
    workers = client.scheduler_info()["workers"]
    cores = client.run(usable_cores)
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, info in workers.items():
        host = info["host"]
        slots[host] = slots.get(host, 0) + info["nthreads"]
        host_cores[host] = cores.get(address, 1)
    return {host: max(1, host_cores[host] // slots[host]) for host in slots}


def run_tasks(executor: Any, fn: Callable[..., Any], tasks: dict[Hashable, tuple], on_result: Callable[[Hashable, Any], None],
              retries: int = 2, renew: Callable[[], Any] | None = None, in_flight: int | None = None,
              name: str = "task") -> list[Failure]:
    """Run ``fn(*args)`` for every ``key: args`` of ``tasks`` on ``executor``; call ``on_result(key, result)``
    in this process as each one finishes; return the tasks that still failed after ``retries`` retries.

    ``renew()`` makes a new executor when the old one broke (a ``ProcessPoolExecutor`` whose worker
    died fails every task it holds): its unfinished tasks are sent again to the new one. With
    ``renew``, ``run_tasks`` owns ``executor`` and every executor ``renew`` made, and shuts them down. At most
    ``in_flight`` tasks are submitted at a time (default: all), so that a broken pool charges an
    attempt only to the tasks that were running. On a Dask client, tasks get the key
    ``<name>-<key>-<attempt>``; a worker lost mid-task is rescheduled by Dask itself.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> got = {}
    >>> with ThreadPoolExecutor(2) as ex:
    ...     run_tasks(ex, pow, {"a": (2, 3), "b": (3, 2)}, got.__setitem__)
    []
    >>> sorted(got.items())
    [('a', 8), ('b', 9)]
    """
    check_int("retries", retries, minimum=0)
    if is_dask(executor):
        from distributed import wait
    else:
        wait = cf.wait
    queue = list(tasks)
    attempts = {key: 0 for key in tasks}
    failures: list[Failure] = []
    running: dict[Any, Hashable] = {}

    def submit(key: Hashable) -> None:
        attempts[key] += 1
        if is_dask(executor):
            future = executor.submit(fn, *tasks[key], key=f"{name}-{key}-{attempts[key]}", pure=False)
        else:
            future = executor.submit(fn, *tasks[key])
        running[future] = key

    def retry_or_fail(key: Hashable, error: BaseException | str) -> None:
        if attempts[key] > retries or isinstance(error, ValueError):
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            failures.append(Failure(key, attempts[key], text))
        else:
            queue.append(key)

    try:
        while queue or running:
            while queue and (in_flight is None or len(running) < in_flight):
                submit(queue.pop(0))
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            broken = False
            for future in done:
                key = running.pop(future)
                try:
                    result = future.result()
                except Exception as err:  # noqa: BLE001 - any error of a remote task is the task's failure
                    broken |= isinstance(err, cf.BrokenExecutor)
                    retry_or_fail(key, err)
                    continue
                on_result(key, result)
            if broken:
                # The pool is gone: every task it still holds fails the same way; take them back now.
                for future, key in list(running.items()):
                    future.cancel()
                    retry_or_fail(key, "the executor broke (a worker process died)")
                running.clear()
                if renew is None:
                    failures += [Failure(key, attempts[key], "not run: the executor broke") for key in queue]
                    return failures
                executor.shutdown(wait=False, cancel_futures=True)
                executor = renew()
    except BaseException:
        for future in running:
            future.cancel()
        raise
    finally:
        if renew is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return failures


def dask_scatter(client: Any, value: Any) -> Any:
    """``value`` sent once to every worker of ``client`` (a future that tasks take as an argument)."""
    return client.scatter(value, broadcast=True, hash=False)


def describe_failures(failures: Iterable[Failure]) -> str:
    """One line per failed task: its key, how often it was tried and the last error.

    >>> describe_failures([Failure("ab12", 3, "KilledWorker: ...")])
    'ab12 (3 attempts): KilledWorker: ...'
    """
    return "; ".join(f"{f.key} ({f.attempts} attempt{'s' if f.attempts != 1 else ''}): {f.error}" for f in failures)
