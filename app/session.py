"""The dashboard's one model: loaded in the background, used by one view at a time.

Every view and background job of the app goes through ``ModelSession.use()``, a lock around the one
loaded model, so two tabs (or a trace and a lens) never interleave hooks on it. ``load(spec)``
starts a loading thread and returns at once; ``status()`` says where loading stands, for the page
to poll, with the loading's own progress (download, de-quantisation, weights). A failed load keeps
the previous model and reports the error. Results of cheap views are memoised per (model,
arguments), so switching tabs does not recompute them; a prompt's tokens need only the tokenizer and
never wait for the model. ``show(result)`` keeps a result a view shows under a token the page holds,
for saving and downloading it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator

from ..probes import HeadscopeError, HeadscopeFailure, Model, Result, load_model
from ..probes.progress import listen


class ModelSession:
    def __init__(self, device: str = "auto", dtype: str = "float32", cache_size: int = 64):
        self.device, self.dtype = device, dtype
        self.model: Model | None = None
        self.lock = threading.RLock()
        self._state = {"spec": None, "state": "empty", "error": None, "started": None, "version": 0}
        self._state_lock = threading.Lock()
        self._memo: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_size = cache_size
        self._shown: OrderedDict[str, Result] = OrderedDict()
        self._tokens: OrderedDict[tuple, Any] = OrderedDict()
        self._token_lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once
        self._ids = itertools.count(1)

    def status(self) -> dict:
        with self._state_lock:
            state = dict(self._state)
        state["loaded"] = None if self.model is None else self.model.spec
        state["info"] = None if self.model is None else self.model.info()
        if state["state"] == "loading":
            state["elapsed"] = round(time.time() - state["started"], 1)
        return state

    def load(self, spec: str, wait: bool = False) -> None:
        """Start loading ``spec`` (nothing happens if it is loaded or loading already)."""
        with self._state_lock:
            if self._state["state"] == "loading" or (self.model is not None and self.model.spec == spec):
                thread = None
            else:
                self._state.update(spec=spec, state="loading", error=None, started=time.time(), progress=None)
                thread = threading.Thread(target=self._load, args=(spec,), daemon=True)
        if thread is not None:
            thread.start()
            if wait:
                thread.join()

    def _load(self, spec: str) -> None:
        def heard(done: int, total: int, desc: str) -> None:
            with self._state_lock:
                self._state["progress"] = (done, total, desc)

        try:
            with listen(heard):
                model = load_model(spec, device=self.device, dtype=self.dtype)
        except Exception as err:  # a bad spec or file: reported in the page, the old model stays
            message = str(err) if isinstance(err, (HeadscopeError, HeadscopeFailure)) else f"{type(err).__name__}: {err}"
            with self._state_lock:
                self._state.update(state="error", error=message.splitlines()[0] if message else type(err).__name__)
            return
        with self.lock:
            self.model = model
            self._memo.clear()
        with self._state_lock:
            self._state.update(state="ready", version=self._state["version"] + 1)

    @contextlib.contextmanager
    def use(self) -> Iterator[Model]:
        """The loaded model, held for the block."""
        with self.lock:
            if self.model is None:
                raise HeadscopeError("no model is loaded yet")
            yield self.model

    def memo(self, key: tuple, compute: Callable[[Model], Any]) -> Any:
        """``compute(model)`` under the lock, remembered for (loaded model, ``key``)."""
        with self.use() as model:
            full = (model.spec,) + key
            if full in self._memo:
                self._memo.move_to_end(full)
                return self._memo[full]
            value = compute(model)
            self._memo[full] = value
            if len(self._memo) > self._cache_size:
                self._memo.popitem(last=False)
            return value

    def prefetch(self, key: tuple, compute: Callable[[Model], Any]) -> None:
        """Start ``memo(key, compute)`` in a thread, so a view's own call, arriving a round trip later,
        finds it done or running (it waits on the model's lock). A failure is not remembered: the view's
        call computes again and reports it."""
        if self.model is None:
            return

        def fill() -> None:
            with contextlib.suppress(Exception):
                self.memo(key, compute)

        threading.Thread(target=fill, daemon=True).start()

    def tokens(self, prompt: str):
        """The loaded model's tokenization of ``prompt`` (memoised), without waiting for the model."""
        model = self.model
        if model is None:
            raise HeadscopeError("no model is loaded yet")
        with self._token_lock:
            key = (model.spec, prompt)
            if key not in self._tokens:
                self._tokens[key] = model.tokenize(prompt)
                if len(self._tokens) > self._cache_size:
                    self._tokens.popitem(last=False)
            return self._tokens[key]

    def show(self, result: Result) -> str:
        """A token for ``result``, which a view shows (the last ``cache_size`` are kept)."""
        with self._state_lock:
            for token, kept in self._shown.items():  # a memoised result shown again keeps its token
                if kept is result:
                    self._shown.move_to_end(token)
                    return token
            token = f"r{next(self._ids)}"
            self._shown[token] = result
            if len(self._shown) > self._cache_size:
                self._shown.popitem(last=False)
        return token

    def shown(self, token: str | None) -> Result:
        with self._state_lock:
            result = self._shown.get(token or "")
        if result is None:
            raise HeadscopeError("nothing to save yet: compute the view first" if not token else
                                 "that result is no longer kept: compute the view again")
        return result

    def peek(self, key: tuple) -> Any:
        """What ``memo`` remembers for (loaded model, ``key``), or None, without computing."""
        with self.use() as model:
            return self._memo.get((model.spec,) + key)
