"""A widget's background worker: runs handed-over jobs one at a time, in the order they were
handed over, on a thread that exists only while there is work.

The thread leaves after ``idle_timeout`` seconds without work. Deciding to leave and handing
over a job happen under one lock, so a job handed over at that moment either is seen by the
leaving thread or starts a new one: it is never left in a queue nobody reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("voicenb")


class Streamed:
    """An ``on_token`` callback that shows the answer so far through ``show(text)``, at
    most ~20 times a second (smooth, and cheap on the kernel's messages)."""

    def __init__(self, show: Callable[[str], None], every: float = 0.05) -> None:
        self.show, self.every = show, every
        self.pieces: list[str] = []
        self.last = 0.0

    def __call__(self, piece: str) -> None:
        self.pieces.append(piece)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.show("".join(self.pieces))


class Worker:
    def __init__(self, run: Callable[[Any], None], *, name: str,
                 idle_timeout: float = 60.0) -> None:
        self._run = run
        self.name = name
        self.idle_timeout = idle_timeout
        self._jobs: deque[Any] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pending = 0  # handed over and not finished

    def submit(self, job: Any) -> None:
        """Hand over ``job``; it runs after every job handed over before it."""
        with self._cond:
            self._jobs.append(job)
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job handed over so far has run; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def alive(self) -> bool:
        """Whether a thread is running (it leaves when idle)."""
        with self._cond:
            return self._thread is not None

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._jobs:
                    self._cond.wait(self.idle_timeout)
                if not self._jobs:
                    self._thread = None  # under the lock: the next submit starts a thread
                    return
                job = self._jobs.popleft()
            try:
                self._run(job)
            except Exception:  # a job's bug must not strand the jobs after it
                log.exception("voicenb: %s failed", self.name)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
