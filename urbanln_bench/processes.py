"""Worker processes that die with their parent, and SIGTERM as an orderly stop (docs/reliability.md).

A killed run must leave nothing that blocks the next one. Two things used to: pool workers forked
from the parent inherited its open lock file, so the OS kept the ``flock`` held for as long as they
lived, and they outlived a SIGKILLed parent (blocked on their task queue forever). So a pool here
starts its workers with ``spawn`` (a fresh interpreter: Python's descriptors are close-on-exec, so no
lock travels to a worker) and each worker asks Linux to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``). SIGTERM on a CLI process unwinds like Ctrl-C, so ``finally`` blocks remove
temporary folders and terminate the pool; SIGKILL runs nothing, and the next run cleans up instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
from collections.abc import Iterator

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
