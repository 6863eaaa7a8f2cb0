"""How responsive does the viewer stay while a CPU-heavy model runs from a dock widget?

A QTimer "heartbeat" fires every few milliseconds on the Qt thread; the gap between two beats
is how long the UI could not react.  The same measurement is taken with the viewer idle
(baseline) and while the Segmentation widget runs a MONAI UNet the size of MONAI's spleen
bundle over a cubic volume: Run button -> JobRunner worker -> inference engine
(sliding window, progress per window) -> new Labels layer.  Each setting is measured twice:
"still" (nobody touches the viewer) and "scrolling" (a timer moves through the slices, so
the canvas redraws as when a radiologist browses the CT during inference).

Run (needs an X server; xvfb-run provides one headlessly):

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python benchmarks/bench_ui_responsiveness.py

Options: --size 160 --roi 96 --threads all,auto --precision fp32 --repeat 2 --idle-s 5
--heartbeat-ms 10 --scroll-ms 100 (0 = no scrolling phase).  "inferring" pools the gaps of all
repeats from the Run click to the moment the result is handed to _add_results; adding the
layer (napari's own cost: layer controls, vispy visuals, first draw) is reported on its own.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=160, help="edge of the cubic volume (voxels)")
    parser.add_argument("--roi", type=int, default=96, help="sliding-window edge (voxels)")
    parser.add_argument(
        "--threads", default="all,auto",
        help="comma-separated torch thread counts for the job: a number, 'all' (one per core, "
        "torch's default) or 'auto' (the widgets' default: all cores but one)",
    )
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--idle-s", type=float, default=5.0, help="length of each idle baseline")
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting (figures pooled)")
    parser.add_argument("--heartbeat-ms", type=int, default=10)
    parser.add_argument("--scroll-ms", type=int, default=100, help="0 = skip the scrolling phase")
    return parser.parse_args(argv)


class Heartbeat:
    """Timestamps of a fast QTimer on the Qt thread; gaps between them = UI stalls."""

    def __init__(self, interval_ms: int):
        from qtpy.QtCore import Qt, QTimer

        self.stamps: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.stamps.append(time.perf_counter()))

    def gaps_ms(self, start: float, stop: float) -> np.ndarray:
        stamps = np.array([t for t in self.stamps if start <= t <= stop])
        return np.diff(stamps) * 1000.0


def summarise(gaps_ms: np.ndarray) -> str:
    if gaps_ms.size == 0:
        return "no heartbeats"
    return (
        f"{gaps_ms.size:5d} beats  mean {gaps_ms.mean():5.1f} ms  "
        f"p99 {np.percentile(gaps_ms, 99):6.1f} ms  worst {gaps_ms.max():6.1f} ms"
    )


def spleen_sized_unet(roi: int):
    """A LoadedModel with random weights: MONAI UNet (16..256 channels, 2 residual units)."""
    from napari_medai.models import LoadedModel, ModelCard, build_network

    card = ModelCard(
        name="bench_unet", task="segmentation", roi_size=(roi,) * 3, out_channels=2,
        network={"name": "UNet", "kwargs": {
            "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}},
        output="softmax",
    )
    return LoadedModel(card, build_network(card).eval())


def thread_count(option: str) -> int:
    from napari_medai.widgets._threads import default_job_threads

    if option == "all":
        return os.cpu_count() or 1
    if option == "auto":
        return default_job_threads()
    return int(option)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.environ.get("DISPLAY"):
        print("No X display: run under xvfb-run (see the module docstring).")
        return 2
    import napari
    import torch
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_medai.widgets.segmentation import SegmentationWidget

    rng = np.random.default_rng(0)
    volume = rng.normal(0, 100, (args.size,) * 3).astype(np.float32)
    viewer = napari.Viewer(title="bench_ui_responsiveness")
    viewer.add_image(volume, name="volume", scale=(1.5, 1.0, 1.0))
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.model_box.insertItem(0, "bench_unet (random weights)", spleen_sized_unet(args.roi))
    widget.model_box.setCurrentIndex(0)
    widget.precision_box.setCurrentText(args.precision)
    widget.device_box.setCurrentText("cpu")
    default_add_results = widget._add_results
    adding: list[tuple[float, float]] = []  # (start, stop) of each _add_results on the Qt thread

    def timed_add_results(*a, **kw):
        begin = time.perf_counter()
        try:
            return default_add_results(*a, **kw)
        finally:
            adding.append((begin, time.perf_counter()))

    widget._add_results = timed_add_results

    def wait(seconds: float):
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec_()

    def run_widget(threads: str) -> tuple[str, float, float]:
        widget.job_threads = thread_count(threads)
        statuses, loop = [], QEventLoop()
        widget.job_finished.connect(statuses.append)
        widget.job_finished.connect(loop.quit)
        start = time.perf_counter()
        widget.run_button.click()
        if not statuses:  # finished synchronously only on a bad input
            loop.exec_()
        stop = time.perf_counter()
        widget.job_finished.disconnect(loop.quit)
        widget.job_finished.disconnect(statuses.append)
        return statuses[0], start, stop

    def remove_outputs():
        for layer in [layer for layer in viewer.layers if layer.name != "volume"]:
            viewer.layers.remove(layer)

    heartbeat = Heartbeat(args.heartbeat_ms)
    scroller = QTimer()
    scroller.setInterval(max(args.scroll_ms, 1))

    def scroll():
        step = list(viewer.dims.current_step)
        step[0] = (step[0] + 7) % args.size
        viewer.dims.current_step = step

    scroller.timeout.connect(scroll)

    print("bench_ui_responsiveness")
    print(
        f"volume {args.size}^3 float32 -> Segmentation widget -> JobRunner -> inference engine; "
        f"UNet(16..256, 2 res units, random weights), roi {args.roi}^3, precision {args.precision}, "
        f"cpu; heartbeat every {args.heartbeat_ms} ms; slice scroll every {args.scroll_ms} ms; "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} (default {torch.get_num_threads()} "
        f"threads), napari {napari.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    wait(1.0)  # let the window show and draw once
    status, _, _ = run_widget("auto")  # warm-up (first-call allocations), not measured
    wait(0.5)
    remove_outputs()
    if status != "done":
        print(f"warm-up run ended with '{status}': {widget.status_label.text()}")
        return 1
    heartbeat.timer.start()
    modes = [("still", False)] + ([("scrolling", True)] if args.scroll_ms else [])
    for mode, scrolling in modes:
        if scrolling:
            scroller.start()
        start = time.perf_counter()
        wait(args.idle_s)
        print(f"{mode:<10s} {'idle baseline':<28s} {'':>7s}  "
              f"{summarise(heartbeat.gaps_ms(start, time.perf_counter()))}")
        for threads in args.threads.split(","):
            inferring, around_add, seconds, add_ms, statuses = [], [], [], [], []
            for _ in range(args.repeat):
                status, start, stop = run_widget(threads)
                wait(0.5)  # the beats after the layer was added must exist before we look at them
                add_start, add_stop = adding[-1]
                inferring.append(heartbeat.gaps_ms(start, add_start))
                around_add.append(heartbeat.gaps_ms(add_start - 0.05, add_stop + 0.5))
                seconds.append(add_start - start)
                add_ms.append((add_stop - add_start) * 1000)
                statuses.append(status)
                remove_outputs()
                wait(0.5)
            shown = f"{thread_count(threads)} ({threads})" if not threads.isdigit() else threads
            print(
                f"{mode:<10s} {'inferring, torch threads ' + shown:<28s} {np.median(seconds):5.1f} s  "
                f"{summarise(np.concatenate(inferring))}  {statuses}"
            )
            print(
                f"{mode:<10s} {'  then adding the layer':<28s} {'':>7s}  "
                f"{np.median(add_ms):5.0f} ms in _add_results (median); worst gap with the first "
                f"draw {max(g.max() for g in around_add):6.1f} ms"
            )
        scroller.stop()
    heartbeat.timer.stop()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
