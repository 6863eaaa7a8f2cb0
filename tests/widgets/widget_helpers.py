"""Helpers for the widget tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time

import numpy as np


def fake_core(result, steps: int = 5, delay_s: float = 0.0):
    """A core job ``(progress, cancel) -> result`` that reports ``steps`` windows."""

    def job(progress, cancel):
        for done in range(1, steps + 1):
            time.sleep(delay_s)
            progress(done, steps, f"window {done}")
        return result

    return job


def layer_snapshot(viewer):
    """Names and data identities of the viewer's layers, to show nothing was touched."""
    return [(layer.name, id(layer.data), layer.data.copy()) for layer in viewer.layers]


def assert_unchanged(viewer, snapshot):
    assert [layer.name for layer in viewer.layers] == [name for name, _, _ in snapshot]
    for layer, (_, data_id, data) in zip(viewer.layers, snapshot):
        assert id(layer.data) == data_id
        np.testing.assert_array_equal(layer.data, data)


def fake_engine(monkeypatch, probabilities, *, steps: int = 4, delay_s: float = 0.0, extra=None,
                threads_seen=None, steps_run=None, progress_every: int = 1):
    """Make ``napari_medai.api`` run without a model: any model spec loads as a card with one
    class per channel of ``probabilities`` (``extra`` as its post-processing rules), and
    inference reports ``steps`` windows, then returns ``probabilities``.  The segmentation
    and detection widgets call the API, so everything after inference runs for real.

    ``steps_run``: a list the fake appends each step it runs to.  ``progress_every``: report
    progress at step 1 and then every that many steps only; the cancel token handed to the
    fake is checked at every step, so with a large value only that token stops it early (the
    widget's progress callback also raises once Cancel was pressed)."""
    import torch

    from napari_medai.models.card import ModelCard
    from napari_medai.models.loading import LoadedModel

    channels = probabilities.shape[0]
    # "method": a card that stands in for detectors too (detect() refuses a plain segmentation card)
    card = ModelCard(name="fake", out_channels=channels, extra={"method": "segmentation", **(extra or {})},
                     classes=[{"index": i, "name": f"class {i}"} for i in range(channels)])

    def load_model(spec, device=None):
        return LoadedModel(card, torch.nn.Identity())

    def run_model(model, volume, spacing=None, settings=None, progress=None, cancel=None):
        if threads_seen is not None:
            threads_seen.append(torch.get_num_threads())
        for done in range(1, steps + 1):
            time.sleep(delay_s)
            if cancel is not None:
                cancel.raise_if_cancelled()
            if steps_run is not None:
                steps_run.append(done)
            if progress is not None and (done == 1 or done % progress_every == 0):
                progress(done, steps)
        return probabilities

    # api.py imports both lazily (``from .models import load_model``), so patching the
    # defining modules reaches it.
    monkeypatch.setattr("napari_medai.models.loading.load_model", load_model)
    monkeypatch.setattr("napari_medai.inference.engine.run_model", run_model)


def run_and_cancel(qtbot, widget, started, count=None, timeout_ms: int = 15_000):
    """Run ``widget``, wait until ``started()`` is true, press Cancel.  Returns (how the job
    ended, the ``count()`` of work done just before Cancel, seconds from Cancel to the end)."""
    with qtbot.waitSignal(widget.job_finished, timeout=timeout_ms) as ended:
        widget.run_button.click()
        qtbot.waitUntil(started, timeout=timeout_ms)
        before = count() if count is not None else None
        widget.cancel_button.click()
        clicked = time.monotonic()
    return ended.args[0], before, time.monotonic() - clicked


def record_cancel(monkeypatch, target: str) -> list:
    """Wrap the function at dotted path ``target`` so that each call appends the ``cancel``
    keyword it got (None when it got none) to the returned list, then runs as before."""
    import importlib

    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    seen = []

    def wrapper(*args, **kwargs):
        seen.append(kwargs.get("cancel"))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def count_forward_calls(monkeypatch, network_class) -> list:
    """Each forward pass of any ``network_class`` instance appends 1 to the returned list."""
    original = network_class.forward
    calls = []

    def forward(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(network_class, "forward", forward)
    return calls


def pick_load_entry_and_cancel(widget, monkeypatch, entry: str) -> list:
    """Choose ``entry`` ("Load model file…" or "Load MONAI bundle folder…") in ``widget``'s model
    list as a user's pick does (the index changes, then ``activated``), with its file dialog
    cancelled.  Returns the dialogs opened (to show the branch ran)."""
    from qtpy.QtWidgets import QFileDialog

    opened = []

    def cancelled_file(*_args, **_kwargs):
        opened.append("file")
        return "", ""

    def cancelled_folder(*_args, **_kwargs):
        opened.append("folder")
        return ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(cancelled_file))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(cancelled_folder))
    index = widget.model_box.findData(entry)
    assert index >= 0
    widget.model_box.setCurrentIndex(index)
    widget.model_box.activated.emit(index)
    return opened
