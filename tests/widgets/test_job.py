"""JobRunner: progress, cancel, error reporting and result hand-over, without a viewer."""

from __future__ import annotations

import threading
import time

import pytest
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton
from widget_helpers import fake_core

from napari_medai.errors import InputError
from napari_medai.widgets._job import CANCELLED, DONE, ERROR, JobRunner, Progress

TIMEOUT_MS = 10_000


@pytest.fixture
def runner(qtbot):
    run, cancel, bar, status = QPushButton("Run"), QPushButton("Cancel"), QProgressBar(), QLabel()
    for widget in (run, cancel, bar, status):
        qtbot.addWidget(widget)
    return JobRunner(run, cancel, bar, status)


def start_and_wait(qtbot, runner, job, results):
    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS) as blocker:
        runner.start(job, results.append, name="Test job")
    return blocker.args[0]


def test_progress_reaches_100_percent_and_result_is_handed_over(qtbot, runner):
    reports, results = [], []
    runner.progressed.connect(reports.append)
    assert start_and_wait(qtbot, runner, fake_core("the result", steps=7), results) == DONE
    assert results == ["the result"]
    assert reports[-1] == Progress(7, 7, "window 7")  # the last report is never throttled away
    assert runner._bar.value() == runner._bar.maximum()
    assert runner._status.text() == "Test job: done"
    assert runner._run_button.isEnabled() and not runner._cancel_button.isEnabled()
    assert not runner.is_running


def test_run_is_disabled_while_running_and_cancel_stops_early(qtbot, runner, notifications):
    steps_run, results = [], []

    def slow(progress, cancel):
        for done in range(1, 201):
            time.sleep(0.01)
            steps_run.append(done)
            progress(done, 200)
        return "finished"

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS) as blocker:
        runner.start(slow, results.append, name="Slow job")
        assert not runner._run_button.isEnabled() and runner._cancel_button.isEnabled()
        with pytest.raises(RuntimeError):  # one job at a time
            runner.start(slow, results.append)
        qtbot.waitUntil(lambda: len(steps_run) >= 3, timeout=TIMEOUT_MS)
        runner._cancel_button.click()
    assert blocker.args == [CANCELLED]
    assert results == []  # nothing handed over: nothing added
    # It stopped within one window of the click, far from the end.
    assert len(steps_run) < 50
    assert runner._run_button.isEnabled() and not runner._cancel_button.isEnabled()
    assert runner._bar.value() == 0
    assert ("info", "Slow job cancelled; no layer was added or changed.") in notifications()


def test_a_job_that_ignores_cancel_still_hands_nothing_over(qtbot, runner):
    release, results = threading.Event(), []

    def deaf(progress, cancel):  # never reports progress nor checks the token
        release.wait(5)
        return "late result"

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS) as blocker:
        runner.start(deaf, results.append)
        runner.cancel()
        release.set()
    assert blocker.args == [CANCELLED] and results == []


def test_cancel_after_the_job_returned_but_before_its_result_arrived_hands_nothing_over(qtbot, runner):
    returned, results = threading.Event(), []

    def quick(progress, cancel):
        returned.set()
        return "result"

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS) as blocker:
        runner.start(quick, results.append)
        # the Qt thread is busy (no events processed): the job finishes, its result waits in the queue
        assert returned.wait(5)
        time.sleep(0.5)
        runner.cancel()  # e.g. the dock was closed
    assert blocker.args == [CANCELLED] and results == []


def test_input_error_is_a_notification_and_nothing_is_handed_over(qtbot, runner, notifications):
    def bad(progress, cancel):
        progress(1, 4)
        raise InputError("the image is constant")

    results = []
    assert start_and_wait(qtbot, runner, bad, results) == ERROR
    assert results == []
    assert ("error", "Test job: the image is constant") in notifications()
    assert isinstance(runner.last_error, InputError)
    assert "the image is constant" in runner._status.text()
    assert runner._run_button.isEnabled()


def test_a_bug_is_reported_with_its_exception(qtbot, runner, notifications):
    def buggy(progress, cancel):
        return 1 / 0

    assert start_and_wait(qtbot, runner, buggy, []) == ERROR
    assert isinstance(runner.last_error, ZeroDivisionError)
    assert any(sev == "error" and "division by zero" in msg for sev, msg in notifications())


def test_running_out_of_memory_is_a_sentence_not_a_bug(qtbot, runner, notifications):
    """torch's OutOfMemoryError on a GPU was shown as a program error with its traceback."""
    import torch

    def too_big(progress, cancel):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    results = []
    assert start_and_wait(qtbot, runner, too_big, results) == ERROR and results == []
    said = [msg for sev, msg in notifications() if sev == "error"]
    assert said == ["Test job: the GPU ran out of memory (CUDA out of memory. Tried to allocate 9.00 GiB). Run it "
                    "on the CPU (device 'cpu'), close other programs using the GPU, or crop the image to the region "
                    "you need"]
    assert "ran out of memory" in runner._status.text()


def test_a_finished_worker_keeps_nothing_its_job_held(qtbot, runner):
    """napari keeps every finished worker with its arguments for the session: a job handed over
    directly kept its image (and layer and widget) alive after the reader removed them, a CT a
    run (found by an audit helper)."""
    import gc
    import weakref

    import numpy as np

    class Image:  # stands for a layer's array (numpy arrays take no weak references)
        data = np.zeros((4, 8, 8))

    image = Image()
    alive = weakref.ref(image)

    def job(progress, cancel, image=image):
        return float(image.data.sum())

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS):
        worker = runner.start(job, lambda result: None, name="Test job")
    del job, image
    gc.collect()
    assert worker is not None and alive() is None
    # a failed job's error (kept as last_error, and in napari's notifications) held it in its frames
    # (found by a reviewer)
    image = Image()
    alive = weakref.ref(image)

    def failing(progress, cancel, image=image):
        raise InputError(f"refused {image.data.shape}")

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS):
        runner.start(failing, lambda result: None, name="Test job")
    del failing, image
    gc.collect()
    assert isinstance(runner.last_error, InputError) and alive() is None


def test_generator_jobs_yield_progress_and_return_the_result(qtbot, runner):
    def generator_job(progress, cancel):
        for done in range(1, 4):
            yield Progress(done, 3)
        return "from a generator"

    reports, results = [], []
    runner.progressed.connect(reports.append)
    assert start_and_wait(qtbot, runner, generator_job, results) == DONE
    assert results == ["from a generator"] and reports[-1] == Progress(3, 3)


def test_a_result_that_cannot_be_shown_is_an_error(qtbot, runner, notifications):
    def refuse(result):
        raise InputError(f"cannot show {result}")

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS) as blocker:
        runner.start(fake_core("x", steps=1), refuse, name="Test job")
    assert blocker.args == [ERROR]
    assert ("error", "Test job: cannot show x") in notifications()


def test_progress_is_throttled_on_the_way_to_the_qt_thread(qtbot, runner):
    reports = []
    runner.progressed.connect(reports.append)
    assert start_and_wait(qtbot, runner, fake_core(None, steps=2000), []) == DONE
    # 2000 instant windows: only the first, the last and a few timed ones reach the UI.
    assert 2 <= len(reports) < 50 and reports[-1].done == 2000


def test_deleting_the_runner_cancels_its_job(qtbot):
    from qtpy.QtWidgets import QWidget

    owner = QWidget()
    runner = JobRunner(QPushButton(owner), QPushButton(owner), QProgressBar(owner), QLabel(owner), parent=owner)
    steps_run, stopped = [], threading.Event()

    def slow(progress, cancel):
        try:
            for done in range(1, 501):
                time.sleep(0.01)
                steps_run.append(done)
                progress(done, 500)
        finally:
            stopped.set()

    runner.start(slow, lambda result: None)
    qtbot.waitUntil(lambda: len(steps_run) >= 2, timeout=TIMEOUT_MS)
    owner.deleteLater()  # as when napari removes a dock widget
    qtbot.waitUntil(stopped.is_set, timeout=TIMEOUT_MS)
    assert len(steps_run) < 100


def test_the_job_runs_off_the_qt_thread_and_its_result_comes_back_on_it(qtbot, runner):
    threads, handed_over_on = [], []

    def job(progress, cancel):
        threads.append(threading.get_ident())
        progress(1, 1)
        return "done"

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS):
        runner.start(job, lambda result: handed_over_on.append(threading.get_ident()), name="Test job")
    qt_thread = threading.get_ident()  # the test runs on the Qt (main) thread
    assert threads and threads[0] != qt_thread
    assert handed_over_on == [qt_thread]
