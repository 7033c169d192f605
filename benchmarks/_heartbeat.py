"""Measure how responsive the Qt event loop stays while a :class:`StageRunner` job runs.

A :class:`Heartbeat` is a 20 ms ``QTimer`` (``Qt.PreciseTimer``) started on the GUI
thread: whenever the event loop is blocked (a long call on the GUI thread, or a worker
thread that holds the GIL), ticks arrive late. The *block* of one tick is how much later
than the interval it came, ``max(gap − interval, 0)``. A :class:`ProgressWatch` records
when the runner's progress bar or status line changed (what the user sees move).

:func:`measure_job` starts a stage through a widget callable and runs a real
``QEventLoop`` until the runner is idle again (its result shown), so the time spent in
``on_result`` (layer creation, plots) is part of the measurement.

Used by ``benchmarks/gui_responsiveness.py``; GUI timings are never asserted in tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QEventLoop, Qt, QTimer

__all__ = ["Heartbeat", "ProgressWatch", "measure_job", "block_stats"]


class Heartbeat:
    """Tick times of a ``interval_ms`` timer on the GUI thread (``perf_counter`` seconds)."""

    def __init__(self, interval_ms: int = 20) -> None:
        self.interval_s = interval_ms / 1000.0
        self.ticks: list[float] = []
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.ticks.append(time.perf_counter())  # a block that lasted to the end counts too

    def blocks_ms(self) -> np.ndarray:
        """``max(gap − interval, 0)`` between consecutive ticks, in ms."""
        gaps = np.diff(np.asarray(self.ticks))
        return np.maximum(gaps - self.interval_s, 0.0) * 1000.0


class ProgressWatch:
    """Times at which a runner's progress bar value or status text changed on screen.

    Polled every ``interval_ms`` on the GUI thread (magicgui's ``Label`` emits no signal
    when its text is set from code, and a blocked GUI thread shows no change anyway).
    """

    def __init__(self, runner: Any, interval_ms: int = 20) -> None:
        self.events: list[tuple[float, float, str]] = []
        self.runner = runner
        self._last = self._state()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    def _state(self) -> tuple[float, float, str]:
        bar = self.runner.progress_bar
        return float(bar.value), float(bar.max), str(self.runner.status.value)

    def _poll(self) -> None:
        state = self._state()
        if state != self._last:
            self._last = state
            self.events.append((time.perf_counter(), state[0], state[2]))

    def longest_gap_s(self, t0: float, t1: float) -> tuple[float, str]:
        """Longest time in ``[t0, t1]`` without a visible change, and the status shown during it."""
        times = [t0] + [t for t, _, _ in self.events if t0 <= t <= t1] + [t1]
        texts = ["(start)"] + [s for t, _, s in self.events if t0 <= t <= t1]
        gaps = np.diff(times)
        i = int(np.argmax(gaps))
        return float(gaps[i]), texts[i]

    def disconnect(self) -> None:
        self._poll()
        self._timer.stop()


def block_stats(blocks_ms: np.ndarray) -> dict[str, float]:
    if len(blocks_ms) == 0:
        return {"max_block_ms": 0.0, "p99_block_ms": 0.0, "n_ticks": 0}
    return {"max_block_ms": float(blocks_ms.max()), "p99_block_ms": float(np.percentile(blocks_ms, 99)),
            "n_ticks": int(len(blocks_ms))}


def measure_job(runner: Any, start: Callable[[], None], *, timeout_s: float = 600.0,
                interval_ms: int = 20, diagnose: bool = False) -> dict[str, Any]:
    """Run ``start()`` (which starts a job in ``runner``) and measure until ``runner`` is idle.

    Returns ``max_block_ms``, ``p99_block_ms``, ``longest_progress_gap_s`` (with the status
    text shown during that gap), ``seconds``, ``n_progress_changes``, ``error``; with
    ``diagnose``, ``stalls``: :class:`StallSampler` samples (times from the start).
    """
    beat, watch = Heartbeat(interval_ms), ProgressWatch(runner)
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(25)
    t_end: list[float] = []

    def check() -> None:
        if not runner.busy or time.perf_counter() - t0 > timeout_s:
            t_end.append(time.perf_counter())
            loop.quit()

    poll.timeout.connect(check)
    beat.start()
    sampler = StallSampler(beat) if diagnose else None
    if sampler is not None:
        sampler.start()
    t0 = time.perf_counter()
    start()
    poll.start()
    if runner.busy:
        loop.exec_() if hasattr(loop, "exec_") else loop.exec()
    else:
        t_end.append(time.perf_counter())
    poll.stop()
    beat.stop()
    if sampler is not None:
        sampler.stop()
    t1 = t_end[0] if t_end else time.perf_counter()
    watch.disconnect()
    gap, during = watch.longest_gap_s(t0, t1)
    err = runner.last_error
    return {**block_stats(beat.blocks_ms()), "longest_progress_gap_s": gap, "status_during_gap": during,
            "seconds": t1 - t0, "n_progress_changes": len(watch.events),
            "final_status": str(runner.status.value), "error": None if err is None else repr(err),
            "timed_out": bool(runner.busy),
            **({"stalls": [{**s, "t": s["t"] - t0} for s in sampler.samples],
                "progress": [(t - t0, v, m) for t, v, m in watch.events]} if sampler is not None else {})}


class StallSampler:
    """Diagnostics (``--diagnose``): what each thread was doing when the GUI thread stalled.

    A Python thread wakes every ``period_s``; when the heartbeat's last tick is older than
    ``threshold_s`` (the GUI thread is busy) or this thread itself woke late (another
    thread held the GIL through a long C call), it records the innermost project/library
    frame of every thread. Holding the GIL delays this thread too, so the frame recorded
    for a GIL-holding thread is the call it was in, or the line just after it.
    """

    def __init__(self, beat: Heartbeat, *, period_s: float = 0.02, threshold_s: float = 0.1) -> None:
        import threading

        self.beat, self.period_s, self.threshold_s = beat, period_s, threshold_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="stall-sampler")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _loop(self) -> None:
        import sys
        import threading
        import traceback

        me = threading.get_ident()
        names = {}
        last = time.perf_counter()
        while not self._stop.wait(self.period_s):
            now = time.perf_counter()
            late = now - last - self.period_s
            last = now
            tick_age = now - (self.beat.ticks[-1] if self.beat.ticks else now)
            if late < self.threshold_s and tick_age < self.threshold_s:
                continue
            names.update({t.ident: t.name for t in threading.enumerate()})
            stacks = {}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                summary = traceback.extract_stack(frame)
                inner = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in summary[-6:]]
                stacks[names.get(ident, str(ident))] = inner
            self.samples.append({"t": now, "sampler_late_ms": late * 1000, "tick_age_ms": tick_age * 1000,
                                 "stacks": stacks})
            last = time.perf_counter()
