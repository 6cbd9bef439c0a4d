"""The worker processes of ``bench --jobs N``: a pool that survives the loss of a worker and dies
with its parent.

``concurrent.futures.ProcessPoolExecutor`` does neither: one killed worker (out of memory, a
stray ``kill``) breaks the whole pool (every run, even those that never started, fails with
``BrokenProcessPool``, and the surviving workers are terminated), and workers whose parent was
killed with ``kill -9`` carry on with the queued runs and never exit, holding the parent's
stdout open. Here every worker has a pipe of its own: a task goes to an idle worker, a lost
worker's task is queued again (``retries`` times, then reported as failed) and a fresh worker
takes its place, and each worker watches its parent's pid and exits when it changes.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PARENT_CHECK_SECONDS = 0.5  # how often a worker checks that its parent is alive


class TaskFailed(Exception):
    """A task raised in its worker, or its worker died more often than the retries allow."""


MAIN_GUARD = re.compile(r"""^\s*if\s+__name__\s*==\s*['"]__main__['"]\s*:""", re.MULTILINE)


def unguarded_main_script() -> str | None:
    """The path of the main script when it has no ``if __name__ == "__main__":`` guard, else None.

    Spawned workers import the main module again; a script that calls ``bench.main([...])`` at
    its top level would start the sweep once more in every worker, which dies while starting
    (its task is lost). Interactive sessions and ``python -m`` modules with the guard are fine."""
    import sys

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not path.endswith(".py") or os.path.basename(path) == "__main__.py":
        return None  # a REPL, a notebook, or a package's __main__ (python -m, console scripts)
    try:
        with open(path, encoding="utf-8") as source:
            text = source.read()
    except OSError:
        return None
    return None if MAIN_GUARD.search(text) else path


def _exit_with_parent(parent: int) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent (killed, re-parented)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)  # at once, mid-run included: nobody is left to take the result

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _serve(connection, parent: int, function, initializer, initargs) -> None:
    """A worker: ``function(*task)`` for every task received until ``None`` or end of file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    _exit_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            result = function(*task)
        except Exception as error:  # noqa: BLE001 -- sent back: a bad task must not end the worker
            result = TaskFailed(f"{type(error).__name__}: {error}")
        connection.send(result)


@dataclass
class _Worker:
    process: object
    connection: object
    task: tuple | None = None  # (index, args) while it runs one


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def imap_unordered(function: Callable, tasks: list[tuple], workers: int, *, initializer=None, initargs=(),
                   retries: int = 1, on_lost: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, object]]:
    """``(index, function(*tasks[index]))`` as each task finishes, on up to ``workers`` spawned
    processes (``function`` and the tasks must pickle). A task that raised gives a
    :class:`TaskFailed`; one whose worker died is run again by a new worker up to ``retries``
    times (``on_lost(index, reason)`` is told each time), then gives a :class:`TaskFailed`.
    Leaving the loop early (Ctrl-C, ``break``) terminates the workers."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")  # torch is not fork-safe
    pending, losses, pool = deque(enumerate(tasks)), {}, []

    def start() -> _Worker:
        mine, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, os.getpid(), function, initializer, initargs),
                                  name="medsegloss-worker")  # not daemonic: a run may start DataLoader workers
        process.start()
        theirs.close()  # the worker's end lives in the worker only: its death reads as end of file
        pool.append(_Worker(process, mine))
        return pool[-1]

    def give(worker: _Worker) -> None:
        worker.task = pending.popleft()
        try:
            worker.connection.send(worker.task[1])
        except OSError:  # it died while idle: the task counts as lost with it, below
            pass

    try:
        while pending or any(worker.task for worker in pool):
            for worker in [worker for worker in pool if worker.task is None]:
                if pending:
                    give(worker)
            while pending and len(pool) < workers:
                give(start())
            busy = [worker for worker in pool if worker.task]
            wait([worker.connection for worker in busy] + [worker.process.sentinel for worker in busy])
            for worker in busy:
                index = worker.task[0]
                try:
                    if worker.connection.poll():
                        result = worker.connection.recv()
                        worker.task = None
                        yield index, result
                        continue
                except (EOFError, OSError):
                    pass
                if worker.process.is_alive():
                    continue
                # the worker died with the task: a fresh worker takes it
                worker.process.join()
                worker.connection.close()
                pool.remove(worker)
                losses[index] = losses.get(index, 0) + 1
                reason = f"its worker process {worker.process.pid} {_exit_reason(worker.process.exitcode)}"
                if losses[index] > retries:
                    yield index, TaskFailed(f"{reason} ({losses[index]} times)")
                else:
                    if on_lost is not None:
                        on_lost(index, reason)
                    pending.appendleft(worker.task)
        for worker in pool:
            try:
                worker.connection.send(None)
            except OSError:  # it died while idle
                pass
        for worker in pool:
            worker.process.join(10)
    finally:
        for worker in pool:  # stop runs in progress now (Ctrl-C, an error, a consumer that left)
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in pool:
            worker.process.join(10)
            worker.connection.close()
