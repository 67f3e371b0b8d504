"""Unwrapping a set's keys in several sessions at once.

A token that keeps its objects in files spends most of an unwrap into a token object in the
file system (SoftHSM2 rewrites a new object's file some 35 times as it fills in its
attributes), and one session leaves the rest of the machine idle: on SoftHSM2, two sessions
unwrap ~1.9 times and four ~2.5 times the keys per second of one. Network HSMs are driven
the same way, one session per thread. A worker makes a key, reads it back, makes it
sensitive and proves it, all in its own session; what a restore keeps, removes and reports
is decided in the caller's thread, in the set's order.

It needs a module initialised for threads (:func:`sealkeep.hsm.initialise_for_threads`):
python-pkcs11's own initialisation tells a module that it need not lock.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import TypeVar

from pkcs11.exceptions import PKCS11Error

from .hsm_caps import Profile
from .hsm_keys import Wrapping
from .hsm_raw import RawModule

__all__ = ["RESTORE_SESSIONS", "UnwrapSessions"]

# Sessions a restore unwraps in where the module allows threads (the figures above).
RESTORE_SESSIONS = 4

_Made = TypeVar("_Made")


class UnwrapSessions:
    """``count`` sessions of their own on the slot (sharing the caller's login), each in one
    worker thread; :meth:`submit` runs work with one session's :class:`Wrapping`.

    As many sessions as the token grants are used (none: :attr:`usable` is false). On
    leaving, work not started is cancelled, work under way is waited for, and the sessions
    are closed; what the work made stays (it is the caller's to keep or destroy)."""

    def __init__(self, raw: RawModule, slot_id: int, profile: Profile, count: int) -> None:
        self._raw = raw
        self._sessions: list[int] = []
        for _ in range(count):
            try:
                self._sessions.append(raw.open_session(slot_id))
            except PKCS11Error:
                break  # a token's session limit: fewer workers
        self._free: queue.SimpleQueue[Wrapping] = queue.SimpleQueue()
        for session in self._sessions:
            self._free.put(Wrapping(raw, session, profile))
        self._mine = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        if self._sessions:
            self._executor = ThreadPoolExecutor(
                max_workers=len(self._sessions),
                thread_name_prefix="sealkeep-unwrap",
                initializer=self._take_session,
            )

    @property
    def usable(self) -> bool:
        return self._executor is not None

    def _take_session(self) -> None:
        self._mine.wrapping = self._free.get_nowait()  # one per worker: as many as sessions

    def submit(self, work: Callable[[Wrapping], _Made]) -> Future[_Made]:
        if self._executor is None:
            raise RuntimeError("no session could be opened for the workers")
        return self._executor.submit(lambda: work(self._mine.wrapping))

    def __enter__(self) -> UnwrapSessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for session in self._sessions:
            with suppress(PKCS11Error):
                self._raw.close_session(session)
        self._sessions = []
