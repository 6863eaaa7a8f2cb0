"""A thread-safe cancel flag shared between the UI (which sets it) and a running job."""

from __future__ import annotations

import threading

from ..errors import Cancelled, InputError


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


def as_cancel_token(cancel) -> CancelToken:
    """``cancel`` as the tasks take it: a :class:`CancelToken` as it is, None as a fresh token
    that nobody sets.  Anything else is refused before any work, with a message: ``cancel=True``
    failed at the first check with "'bool' object has no attribute 'raise_if_cancelled'", and a
    ``threading.Event`` the same way.  One rule for the tasks: ``api.segment``, ``api.detect``,
    ``denoising.denoise`` and ``batch.screen_cases`` call it first."""
    if cancel is None:
        return CancelToken()
    if isinstance(cancel, CancelToken):
        return cancel
    raise InputError(f"cancel must be a napari_medai.inference.CancelToken (keep it, and call its cancel() to "
                     f"stop the run) or None; got {cancel!r} ({type(cancel).__name__})")
