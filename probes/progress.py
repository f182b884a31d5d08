"""Progress of long work: a tqdm bar in terminals and notebooks, and a listener for other front ends.

Every analysis loop goes through ``tracked(...)``. Whoever runs an analysis can ``listen`` for the
duration of a ``with`` block (the dashboard's background jobs do): the listener is told
``(done, total, description)`` at every step and may raise ``Cancelled`` to stop the work between
steps. The listener lives in a context variable, so concurrent jobs in other threads each hear
only their own work.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
Listener = Callable[[int, int, str], None]

_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("headscope_progress", default=None)


class Cancelled(Exception):
    """Raised by a listener to stop the work it is listening to."""


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Call ``listener(done, total, description)`` at each step of any analysis run in this block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def tracked(items: Iterable[T], desc: str, unit: str = "it", disable: bool = False) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (unless ``disable``) and tell the listener, if any."""
    items = list(items)
    listener = _listener.get()
    if listener is not None:
        listener(0, len(items), desc)
    for done, item in enumerate(_tqdm()(items, desc=desc, unit=unit, disable=disable), start=1):
        yield item
        if listener is not None:
            listener(done, len(items), desc)


def _tqdm():
    """tqdm's notebook widget where ipywidgets can draw it, else its text bar (no warning either way)."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm
