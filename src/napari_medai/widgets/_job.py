"""One way to run long work off the Qt thread: progress bar, Cancel button, clear errors.

A *job* is the Qt-free core of a widget action, in one of two shapes:

* a function ``job(progress, cancel) -> result`` that calls ``progress(done, total, message)``
  as it goes and stops when the :class:`CancelToken` ``cancel`` is set (``progress`` itself
  raises :class:`~napari_medai.errors.Cancelled` once Cancel was pressed, so any job that
  reports progress per window stops within one window);
* a generator (or a function returning one) that yields :class:`Progress` items and
  ``return``s the result.

:class:`JobRunner` runs it in a napari ``FunctionWorker`` (a ``QThreadPool`` thread), drives
a ``QProgressBar`` and a status label, enables Cancel, and on the Qt thread either hands the
result to ``on_success`` (which adds NEW layers) or reports the failure as a napari
notification without touching any layer.  ``finished`` carries ``"done"``, ``"cancelled"``
or ``"error"`` so tests and callers can wait on it.

Progress crosses threads without Qt: the job only stores its latest report in a plain
attribute, and a QTimer on the Qt thread reads it.  So a job can never emit into a widget
that was closed meanwhile, and a model reporting thousands of windows costs the UI one bar
update per tick.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QAbstractButton, QLabel, QProgressBar

from ..errors import Cancelled, MedaiError, out_of_memory_message
from ..inference.cancel import CancelToken

DONE, CANCELLED, ERROR = "done", "cancelled", "error"

# How often the Qt thread looks at the job's progress.  Fast enough to look live, slow
# enough that redrawing the bar costs nothing measurable (benchmarks/bench_ui_responsiveness).
PROGRESS_POLL_MS = 50
_BAR_STEPS = 1000


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units (windows, slices, ...)."""

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        if self.total <= 0:
            return 0.0
        return min(max(self.done / self.total, 0.0), 1.0)


class _ProgressReporter:
    """The ``progress(done, total, message)`` callable handed to a job (runs in the worker).

    It raises Cancelled once the token is set, and keeps only the latest report (a single
    attribute assignment, atomic under the GIL) for the Qt thread to pick up.
    """

    def __init__(self, token: CancelToken):
        self.token = token
        self.latest: Progress | None = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.token.raise_if_cancelled()
        self.latest = Progress(int(done), int(total), message)


@dataclass
class _Outcome:
    status: str
    value: Any = None  # the result when done, the exception otherwise


def _run_job(holder: list, reporter: _ProgressReporter) -> _Outcome:
    """Body of the worker thread: runs the job ``holder`` holds, taking it out first.  napari
    keeps every finished worker, with its arguments, for the session (its task-status manager):
    a job handed over directly kept its image, its layer and its widget alive after the reader
    removed or closed them, a CT per run.  Every exception becomes an outcome, so that the Qt
    thread alone decides how to report it (a plain message for a user error, the
    traceback for a bug) and no exception escapes into napari's generic handler."""
    token = reporter.token
    job = holder.pop()
    try:
        result = job if inspect.isgenerator(job) else job(reporter, token)
        if inspect.isgenerator(result):
            result = _drain(result, reporter)
        token.raise_if_cancelled()  # a job that ignored Cancel still leaves nothing behind
        return _Outcome(DONE, result)
    except Cancelled as exc:
        return _Outcome(CANCELLED, exc)
    except Exception as exc:  # noqa: BLE001 - reported on the Qt thread
        return _Outcome(ERROR, exc)


def _forget_locals(exc: BaseException) -> None:
    """Let go of what a failed job's frames held: its image and layer stayed alive for as long as
    ``last_error`` and napari's notifications kept the error (the session).  A user's error (bad
    input, a refusal) drops its tracebacks, which no one reads; a bug keeps them for its report,
    its frames' local variables cleared (the frames still say where it failed)."""
    import traceback

    seen = set()
    user = isinstance(exc, MedaiError)
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if user:
            exc.__traceback__ = None
        else:
            try:
                traceback.clear_frames(exc.__traceback__)
            except RuntimeError:  # a frame still running: nothing of ours
                pass
        exc = exc.__cause__ or exc.__context__


def _drain(generator, reporter: _ProgressReporter):
    while True:
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        if isinstance(item, Progress):
            reporter(item.done, item.total, item.message)
        else:  # a bare yield still gives Cancel a chance
            reporter.token.raise_if_cancelled()


class JobRunner(QObject):
    """Runs one job at a time for a widget and keeps its controls in step.

    Signals (all emitted on the Qt thread): ``started()``, ``progressed(Progress)``,
    ``finished(str)`` with ``"done"``, ``"cancelled"`` or ``"error"``.
    """

    started = Signal()
    progressed = Signal(object)
    finished = Signal(str)

    def __init__(
        self,
        run_button: QAbstractButton,
        cancel_button: QAbstractButton,
        progress_bar: QProgressBar,
        status_label: QLabel,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self._run_button = run_button
        self._cancel_button = cancel_button
        self._bar = progress_bar
        self._status = status_label
        self._bar.setRange(0, _BAR_STEPS)
        self._bar.setValue(0)
        self._cancel_button.setEnabled(False)
        self._cancel_button.clicked.connect(self.cancel)
        self._poll = QTimer(self)
        self._poll.setInterval(PROGRESS_POLL_MS)
        self._poll.timeout.connect(self._show_progress)
        self.worker = None
        self._reporter: _ProgressReporter | None = None
        self._shown: Progress | None = None
        self._name = ""
        self._on_success: Callable[[Any], Any] | None = None
        self.last_status: str | None = None
        self.last_error: BaseException | None = None

    @property
    def is_running(self) -> bool:
        return self._reporter is not None

    def start(self, job, on_success: Callable[[Any], Any], name: str = "Job"):
        """Start ``job`` in a worker thread; ``on_success(result)`` runs on the Qt thread (a
        text it returns is the status line, instead of "<name>: done")."""
        from napari.qt.threading import create_worker

        if self.is_running:
            raise RuntimeError("a job is already running")
        token = CancelToken()
        self._reporter = _ProgressReporter(token)
        self._shown = None
        self._name = name
        self._on_success = on_success
        self.last_status = self.last_error = None
        self._bar.setValue(0)
        self._set_running(True)
        self._status.setText(f"{name}: running…")

        worker = create_worker(_run_job, [job], self._reporter, _start_thread=False)
        # Connect before start(): a fast job can return before a late connect.
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_crashed)  # only if _run_job itself fails
        worker.finished.connect(partial(self._forget_worker, worker))
        self.worker = worker
        # A closed dock widget (or viewer) deletes this runner: stop the job rather than let
        # it burn the CPU for a result nobody can receive.
        self.destroyed.connect(token.cancel)
        self.started.emit()
        self._poll.start()
        worker.start()
        return worker

    def cancel(self):
        """Ask the running job to stop; it does at its next progress report."""
        if self._reporter is not None and not self._reporter.token.cancelled:
            self._reporter.token.cancel()
            self._cancel_button.setEnabled(False)
            self._status.setText(f"{self._name}: cancelling…")

    # ---- Qt-thread slots -------------------------------------------------------------
    def _show_progress(self):
        item = self._reporter.latest if self._reporter is not None else None
        if item is None or item == self._shown:
            return
        self._shown = item
        self._bar.setValue(round(item.fraction * _BAR_STEPS))
        text = f"{self._name}: {item.done}/{item.total}"
        self._status.setText(f"{text} – {item.message}" if item.message else text)
        self.progressed.emit(item)

    def _on_returned(self, outcome: _Outcome):
        from napari.utils.notifications import notification_manager, show_error, show_info

        self._show_progress()  # the last report, however fast the job was
        status, value = outcome.status, outcome.value
        if status == DONE and self._reporter is not None and self._reporter.token.cancelled:
            # Cancel (or a closed dock) came after the worker's last check: still add nothing
            status, value = CANCELLED, Cancelled()
        said = None  # what the success callback has to say instead of "done"
        if status == DONE:
            try:
                if self._on_success is not None:
                    said = self._on_success(value)
            except Exception as exc:  # noqa: BLE001 - a result that cannot be shown
                status, value = ERROR, exc
        if status == DONE:
            self._bar.setValue(_BAR_STEPS)
            self._status.setText(said if isinstance(said, str) and said else f"{self._name}: done")
        elif status == CANCELLED:
            self._bar.setValue(0)
            self._status.setText(f"{self._name}: cancelled, nothing was added")
            show_info(f"{self._name} cancelled; no layer was added or changed.")
        else:
            memory = out_of_memory_message(value)  # not the plugin's bug: the image did not fit
            self._status.setText(f"{self._name} failed: {memory or value}")
            if isinstance(value, MedaiError) or memory:
                show_error(f"{self._name}: {memory or value}")
            else:  # a bug: keep the traceback reachable from the notification
                notification_manager.receive_error(type(value), value, value.__traceback__)
            _forget_locals(value)
        self._end(status, value if status != DONE else None)

    def _on_crashed(self, exc: BaseException):
        self._status.setText(f"{self._name} failed: {exc}")
        self._end(ERROR, exc)

    def _end(self, status: str, error: BaseException | None):
        self._poll.stop()
        if self._reporter is not None:
            self.destroyed.disconnect(self._reporter.token.cancel)
        self._reporter = None
        self._on_success = None
        self.last_status, self.last_error = status, error
        self._set_running(False)
        self.finished.emit(status)

    def _forget_worker(self, worker):
        if self.worker is worker:  # not a newer job's worker
            self.worker = None

    def _set_running(self, running: bool):
        self._run_button.setEnabled(not running)
        self._cancel_button.setEnabled(running)
