"""A thread-safe cancel flag shared between the UI (which sets it) and a running job."""

from __future__ import annotations

import threading

from ..errors import Cancelled


class CancelToken:
    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")

    def __repr__(self):
        return f"CancelToken(cancelled={self.cancelled})"
