"""Dash background callbacks that run in threads of the app's own process.

Dash's ``DiskcacheManager`` starts a process per job; a job there would not see the model the app
has loaded (and loading one per job takes seconds and gigabytes). ``ThreadManager`` keeps its
result store (diskcache, process-safe) and its protocol, but runs each job in a thread that shares
the app's ``ModelSession``. Cancelling a job sets its flag; ``job_progress`` turns the analyses'
progress ticks (``probes.progress``) into the page's progress bar and raises ``Cancelled`` at the
next tick after the flag is set, so a cancelled analysis stops between steps and leaves nothing
half-written.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from typing import Callable, Iterator

from dash import DiskcacheManager

from ..probes.progress import Cancelled, listen

_cancel_flag: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("headscope_job", default=None)


class ThreadManager(DiskcacheManager):
    def __init__(self, cache):
        super().__init__(cache)
        self._jobs: dict[int, tuple[threading.Thread, threading.Event]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call_job_fn(self, key, job_fn, args, context):
        flag = threading.Event()

        def target():
            _cancel_flag.set(flag)  # a new thread starts with an empty context: the job copies this one
            job_fn(key, self._make_progress_key(key), args, context)

        thread = threading.Thread(target=target, daemon=True, name="headscope-job")
        with self._lock:
            job = next(self._ids)
            self._jobs[job] = (thread, flag)
        thread.start()
        return job

    def terminate_job(self, job):
        if job is None:
            return
        with self._lock:
            entry = self._jobs.pop(int(job), None)
        if entry is not None:
            entry[1].set()

    def terminate_unhealthy_job(self, job):
        return False

    def job_running(self, job):
        with self._lock:
            entry = self._jobs.get(int(job))
        return entry is not None and entry[0].is_alive()


@contextlib.contextmanager
def job_progress(set_progress: Callable[[tuple], None], extra: Callable[[], tuple] = tuple) -> Iterator[None]:
    """Report the analyses' progress as ``(done, total, label, *extra())`` (``extra``: what else the page
    shows as the job goes, such as text generated so far) and stop them when the job is cancelled."""
    flag = _cancel_flag.get()

    def listener(done: int, total: int, desc: str) -> None:
        if flag is not None and flag.is_set():
            raise Cancelled(desc)
        set_progress((str(done), str(max(total, 1)), f"{desc}: {done}/{total}", *extra()))

    with listen(listener):
        yield
