"""Worker processes that die with their parent, and SIGTERM as an orderly stop (docs/reliability.md).

A killed run must leave nothing that blocks the next one. Two things used to: pool workers forked
from the parent inherited its open lock file, so the OS kept the ``flock`` held for as long as they
lived, and they outlived a SIGKILLed parent (blocked on their task queue forever). So a pool here
starts its workers with ``spawn`` (a fresh interpreter: Python's descriptors are close-on-exec, so no
lock travels to a worker) and each worker asks Linux to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``). SIGTERM on a CLI process unwinds like Ctrl-C, so ``finally`` blocks remove
temporary folders and terminate the pool; SIGKILL runs nothing, and the next run cleans up instead.

Two kinds of pool: ``worker_pool`` (a ``multiprocessing.Pool``, for many short chunks: twin rendering) and
``worker_processes`` (one task per worker at a time, for long tasks: ``urbanln-bench grid``'s cells), where a
worker that dies costs only its own task and a fresh one takes its place.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from urbanln_bench.errors import UserError

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WORKERS_ENV = "URBANLN_BENCH_WORKERS"
_WORKERS: contextvars.ContextVar[int | None] = contextvars.ContextVar("workers", default=None)


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: SIGKILL this worker when ``parent_pid`` dies (Linux), and leave Ctrl-C to it.

    The death signal is tied to the thread that started the worker; pools here are started from the
    run's main thread. Where ``prctl`` is missing (macOS), a worker whose parent is gone still ends
    when its task queue closes, after the task it is running.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, and terminates the pool
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """A process pool whose workers hold no descriptor of the parent's and die with it.

    On an exception (SIGTERM and Ctrl-C included) the workers are terminated at once instead of
    finishing the queued tasks; on success the pool is closed and joined.
    """
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(processes=workers, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@contextlib.contextmanager
def workers_for_this_run(workers: int | None) -> Iterator[None]:
    """Inside, :func:`resolve_workers` answers ``workers`` when a caller asks for no number itself: how
    the CLI's ``--workers`` reaches the caption pipeline deep inside ``run`` without a parameter on every
    layer between (None: leave the environment or the core count to decide)."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    token = _WORKERS.set(workers)
    try:
        yield
    finally:
        _WORKERS.reset(token)


def workers_chosen(requested: int | None = None) -> bool:
    """Whether a number of workers was asked for (argument, ``--workers``, environment), not left to the cores."""
    return requested is not None or _WORKERS.get() is not None or bool(os.environ.get(WORKERS_ENV, "").strip())


def resolve_workers(requested: int | None = None) -> int:
    """How many worker processes a parallel step starts: ``requested``, else ``--workers`` of this run,
    else ``$URBANLN_BENCH_WORKERS``, else every core this process may use.

    A pool's own worker gets 1: its pool is daemonic and may not start processes of its own.
    """
    workers = requested if requested is not None else _WORKERS.get()
    if workers is None:
        text = os.environ.get(WORKERS_ENV, "").strip()
        if text:
            try:
                workers = int(text)
            except ValueError:
                raise UserError(f"${WORKERS_ENV} must be a whole number of worker processes, got {text!r}") from None
            if workers < 1:
                raise UserError(f"${WORKERS_ENV} must be at least 1, got {workers}")
        else:
            workers = available_cores()
    if workers < 1:
        raise UserError(f"the number of worker processes must be at least 1, got {workers}")
    if multiprocessing.current_process().daemon:
        return 1
    return workers


def _stop(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` in the main thread, so a terminated run unwinds:
    temporary folders are removed, pools terminated and locks released on the way out. The previous
    handler comes back on exit (the tests run the CLI in-process); off the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class TaskEvent:
    """What ``WorkerProcesses.run`` reports about task ``index``: ``started`` (value: the worker's pid),
    ``done`` (value: the task's return value), ``failed`` (value: the formatted exception) or ``died``
    (value: the worker's exit code, negative for a signal; ``retried`` when the task was queued again)."""

    kind: str
    index: int
    value: Any = None
    retried: bool = False


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    task: int | None = None


def _serve(connection: Connection, parent_pid: int, setup: Callable[..., None] | None, setup_args: tuple) -> None:
    """A worker's loop: one ``(index, function, argument)`` at a time, its result sent back; ``None`` or a
    closed pipe ends it. SIGTERM unwinds it (``stop_on_sigterm``), so its ``finally`` blocks run."""
    die_with_parent(parent_pid)
    with stop_on_sigterm():
        if setup is not None:
            setup(*setup_args)
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            index, function, argument = message
            try:
                connection.send(("done", index, function(argument)))
            except Exception:  # the task's own failure: reported, the worker goes on with the next task
                connection.send(("failed", index, traceback.format_exc()))


class WorkerProcesses:
    """``workers`` spawned processes that run one task each at a time and die with their parent.

    Unlike ``multiprocessing.Pool`` (``worker_pool``), a worker that dies in a task (SIGKILL, the OOM killer,
    a crash in native code) costs only that task: it is reported as ``died`` (or queued again, up to
    ``retries`` times) and a fresh worker takes its place, where a pool would wait for its result forever.
    The workers are not daemonic, so a task may start its own ``worker_pool`` (twin rendering does).
    """

    def __init__(self, workers: int, setup: Callable[..., None] | None = None, setup_args: tuple = ()) -> None:
        self.size = max(1, workers)
        self._setup, self._setup_args = setup, setup_args
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, os.getpid(), self._setup, self._setup_args),
                                        daemon=False)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _replace(self, position: int) -> None:
        old = self._workers[position]
        old.process.join()
        old.connection.close()
        self._workers[position] = self._start()

    def run(self, function: Callable[[Any], Any], tasks: list[Any], retries: int = 0,
            groups: list[Hashable | None] | None = None) -> Iterator[TaskEvent]:
        """Run ``function(task)`` for every task (``function`` importable by name: workers are spawned) and
        yield events as they happen, in completion order.

        ``groups`` (one per task; None: no group) keeps the tasks of a group on one worker, one after
        another: the worker that starts a group's first task takes its other tasks next, and no other worker
        takes them meanwhile (the grid's cells of one fit, so the worker's kept fit serves them all). A group
        whose worker died is free again for any worker."""
        from multiprocessing.connection import wait

        queue = collections.deque(range(len(tasks)))
        attempts = collections.Counter()
        group_of = groups or [None] * len(tasks)
        owner: dict[Hashable, int] = {}  # group → the position of the worker that runs it

        def next_task(position: int) -> int | None:
            mine = [i for i in queue if group_of[i] is not None and owner.get(group_of[i]) == position]
            free = [i for i in queue if group_of[i] is None or owner.get(group_of[i], position) == position]
            chosen = (mine or free or [None])[0]
            if chosen is not None:
                queue.remove(chosen)
                if group_of[chosen] is not None:
                    owner[group_of[chosen]] = position
            return chosen

        def release(position: int) -> None:
            for group in [g for g, p in owner.items() if p == position]:
                del owner[group]

        while len(self._workers) < min(self.size, len(tasks)):
            self._workers.append(self._start())
        while queue or any(w.task is not None for w in self._workers):
            for position in range(len(self._workers)):
                if self._workers[position].task is not None or not queue:
                    continue
                if not self._workers[position].process.is_alive():  # died while idle: lost no task
                    self._replace(position)
                    release(position)
                worker = self._workers[position]
                index = next_task(position)
                if index is None:  # every queued task belongs to a group another worker runs
                    continue
                try:
                    worker.connection.send((index, function, tasks[index]))
                except OSError:  # it died just now: a fresh worker takes the task
                    self._replace(position)
                    release(position)
                    queue.appendleft(index)
                    continue
                worker.task = index
                attempts[index] += 1
                yield TaskEvent("started", index, worker.process.pid)
            busy = [w for w in self._workers if w.task is not None]
            wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for position, worker in enumerate(self._workers):
                if worker.task is None:
                    continue
                message = None
                try:
                    if worker.connection.poll():
                        message = worker.connection.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    kind, index, value = message
                    worker.task = None
                    yield TaskEvent(kind, index, value)
                elif not worker.process.is_alive():
                    index, worker.task = worker.task, None
                    self._replace(position)
                    release(position)
                    again = attempts[index] <= retries
                    if again:
                        queue.appendleft(index)
                    yield TaskEvent("died", index, worker.process.exitcode, retried=again)

    def close(self, *, terminate: bool = False) -> None:
        """Stop every worker: ask them to end (``terminate``: SIGTERM, which unwinds a running task), then
        SIGKILL whichever is still alive after a few seconds."""
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                if terminate:
                    worker.process.terminate()
                else:
                    worker.connection.send(None)
        for worker in self._workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self._workers = []


@contextlib.contextmanager
def worker_processes(workers: int, setup: Callable[..., None] | None = None,
                     setup_args: tuple = ()) -> Iterator[WorkerProcesses]:
    """``WorkerProcesses`` for the block: closed on success, terminated on any exception (SIGTERM and
    Ctrl-C included)."""
    pool = WorkerProcesses(workers, setup, setup_args)
    try:
        yield pool
    except BaseException:
        pool.close(terminate=True)
        raise
    pool.close()
