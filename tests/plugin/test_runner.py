"""StageRunner: jobs run off the GUI thread, report progress, cancel, queue the latest."""

from __future__ import annotations

import threading

from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.stages._common import Cancelled, check_cancel


def test_progress_result_and_refusal_while_busy(qtbot):
    runner = StageRunner()
    gate = threading.Event()
    results: list = []

    def job(progress, cancel):
        progress(0.5, "half way")
        gate.wait(10)
        return threading.current_thread() is threading.main_thread()

    runner.start(job, results.append)
    assert runner.busy
    runner.start(lambda p, c: "refused", results.append)  # no queue: refused while busy
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert results == [False]  # ran in a worker thread, and the refused job never ran
    assert runner.progress_bar.value == 1000 and runner.status.value == "done"


def test_queue_keeps_only_the_latest_request(qtbot):
    runner = StageRunner()
    gate = threading.Event()
    results: list = []
    runner.start(lambda p, c: gate.wait(10) and "first", results.append)
    runner.start(lambda p, c: "second", results.append, queue=True)
    runner.start(lambda p, c: "third", results.append, queue=True)
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert results == ["first", "third"]


def test_cancel_stops_the_job_and_errors_are_kept(qtbot):
    runner = StageRunner()
    started = threading.Event()

    def job(progress, cancel):
        started.set()
        while True:
            check_cancel(cancel)

    runner.start(job, lambda r: None)
    started.wait(10)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert isinstance(runner.last_error, Cancelled) and runner.status.value == "cancelled"

    def bad(progress, cancel):
        raise ValueError("bad input: field X")

    runner.start(bad, lambda r: None)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert isinstance(runner.last_error, ValueError) and "field X" in runner.status.value
