"""Progress of long work: a tqdm bar in terminals and notebooks, and a listener for other front ends.

Every analysis loop goes through ``tracked(...)``. Whoever runs an analysis can ``listen`` for the
duration of a ``with`` block (the dashboard's background jobs do): the listener is told
``(done, total, description)`` at every step and may raise ``Cancelled`` to stop the work between
steps. The listener lives in a context variable, so concurrent jobs in other threads each hear
only their own work. ``tell`` reports progress that is not a loop over items (bytes downloaded), and
``library_progress`` lets the listener hear the bars a library draws (transformers' GGUF
de-quantisation and weight loading), so loading a model shows real progress too.
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


def tracked(items: Iterable[T], desc: str, unit: str = "it", disable: bool = False,
            total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (unless ``disable``) and tell the listener, if any;
    ``total``: how many items a generator will give (else ``items`` is read into a list first)."""
    if total is None:
        items = list(items)
        total = len(items)
    listener = _listener.get()
    if listener is not None:
        listener(0, total, desc)
    for done, item in enumerate(_tqdm()(items, desc=desc, unit=unit, disable=disable, total=total), start=1):
        yield item
        if listener is not None:
            listener(done, total, desc)


def tell(done: int, total: int, desc: str) -> None:
    """Tell the listener, if any, that ``done`` of ``total`` units of ``desc`` are done."""
    listener = _listener.get()
    if listener is not None:
        listener(done, total, desc)


@contextlib.contextmanager
def library_progress(*modules: str) -> Iterator[None]:
    """Within the block, the bars that the library ``modules`` draw with their module-level ``tqdm``
    are ``tracked`` instead, so the listener hears them. Without a listener nothing changes. The name
    is swapped module-wide for the block: meant for a model load, of which one runs at a time."""
    if _listener.get() is None:
        yield
        return
    import importlib

    loaded = []
    for name in modules:  # a library version without the module or its bar keeps its own bars
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if callable(getattr(module, "tqdm", None)):
            loaded.append(module)
    originals = [module.tqdm for module in loaded]

    def bar(iterable, *args, desc: str = "", disable: bool = False, **kwargs):
        return tracked(iterable, str(desc).rstrip(". "), disable=disable)

    for module in loaded:
        module.tqdm = bar
    try:
        yield
    finally:
        for module, original in zip(loaded, originals):
            module.tqdm = original


def _tqdm():
    """tqdm's notebook widget where ipywidgets can draw it, else its text bar (no warning either way)."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm
