"""StageRunner: jobs run off the GUI thread, report progress, cancel, queue the latest;
progress coalesced, busy state and heartbeat, threads limited, results shown in steps."""

from __future__ import annotations

import threading
import time

import torch
from qtpy.QtCore import QTimer

from napari_cryohet.plugin._runner import UPDATE_MS, StageRunner
from napari_cryohet.stages._common import (
    Cancelled,
    check_cancel,
    gui_worker_threads,
    limit_threads,
    report_busy,
)


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


# ---------------------------------------------------------------- responsiveness (issue 12)
def test_a_progress_flood_reaches_the_gui_coalesced(qtbot):
    """20 000 reports from the worker: the bar changes at most once per UPDATE_MS (plus the
    first and the final state), and the latest report is what is shown."""
    runner = StageRunner()
    gate = threading.Event()
    changes: list[int] = []
    runner.progress_bar.changed.connect(changes.append)

    def job(progress, cancel):
        for i in range(20_000):
            progress(i / 40_000, f"batch {i}")
        progress(0.7, "last report")
        gate.wait(10)
        return "ok"

    t0 = time.perf_counter()
    runner.start(job, lambda r: None)
    qtbot.waitUntil(lambda: runner.status.value == "last report", timeout=10_000)
    elapsed = time.perf_counter() - t0
    assert runner.progress_bar.value == 700
    assert runner._slot.reports == 20_001
    assert len(changes) <= elapsed / (UPDATE_MS / 1000) + 2  # not one per report
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert runner.status.value == "done" and runner.progress_bar.value == 1000


def test_busy_state_and_heartbeat(qtbot):
    """A negative fraction makes the bar indeterminate with the message; with no new
    message for HEARTBEAT_S the status counts seconds; a fraction ≥ 0 restores the bar."""
    runner = StageRunner()
    gate, resume = threading.Event(), threading.Event()

    def job(progress, cancel):
        report_busy(progress, "compiling UMAP")
        resume.wait(10)
        progress(0.5, "embedding")
        gate.wait(10)
        return 1

    runner.start(job, lambda r: None)
    qtbot.waitUntil(lambda: runner.indeterminate and runner.status.value == "compiling UMAP", timeout=5_000)
    assert runner.progress_bar.min == runner.progress_bar.max == 0
    qtbot.waitUntil(lambda: "still working" in runner.status.value, timeout=5_000)
    assert runner.status.value.startswith("compiling UMAP") and runner.indeterminate
    resume.set()
    qtbot.waitUntil(lambda: runner.status.value == "embedding", timeout=5_000)
    assert not runner.indeterminate and runner.progress_bar.max == 1000 and runner.progress_bar.value == 500
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert runner.status.value == "done" and runner.progress_bar.value == 1000


def test_jobs_run_with_torch_and_blas_threads_limited(qtbot):
    """The job's torch and BLAS thread counts are at most every core but one; the GUI
    thread's torch setting is untouched, and the BLAS limits are restored afterwards."""
    from threadpoolctl import threadpool_info

    runner = StageRunner()
    main_threads = torch.get_num_threads()
    blas_before = [pool["num_threads"] for pool in threadpool_info()]
    results: list = []

    def job(progress, cancel):
        return torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]

    runner.start(job, results.append)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    n = gui_worker_threads()
    torch_threads, blas = results[0]
    assert torch_threads <= n and all(b <= n for b in blas)
    assert torch.get_num_threads() == main_threads
    assert [pool["num_threads"] for pool in threadpool_info()] == blas_before


def test_limit_threads_nests_and_restores():
    """Overlapping blocks (two runners at once): the BLAS limit is set by the first and
    restored by the last; torch's setting of the calling thread comes back on exit."""
    from napari_cryohet.stages import _common

    torch_before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        limiter = _common._blas_limiter
        with limit_threads(1):
            assert _common._blas_users == 2 and _common._blas_limiter is limiter  # not limited twice
        assert _common._blas_users == 1 and _common._blas_limiter is limiter
    assert _common._blas_users == 0 and _common._blas_limiter is None
    assert torch.get_num_threads() == torch_before


def test_generator_on_result_runs_one_step_per_event_loop_turn(qtbot):
    """Between two steps of a generator on_result the event loop runs (a zero-delay timer
    set in step 1 has fired by step 2); the runner is busy until the last step, and a
    queued job starts only after it."""
    runner = StageRunner()
    fired: list[bool] = []
    seen: list = []

    def show(result):
        QTimer.singleShot(0, lambda: fired.append(True))
        seen.append(("step 1", result, runner.busy))
        yield
        seen.append(("step 2", bool(fired), runner.busy))
        yield
        seen.append(("step 3", runner.busy))

    runner.start(lambda p, c: 42, show)
    runner.start(lambda p, c: "queued", seen.append, queue=True)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert seen == [("step 1", 42, True), ("step 2", True, True), ("step 3", True), "queued"]
    assert runner.status.value == "done"
