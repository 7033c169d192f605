"""Run a stage off the GUI thread with a progress bar and a cancel button.

Every stage widget embeds one :class:`StageRunner` (a magicgui ``Container``): the widget
builds a stage config from its form and calls :meth:`StageRunner.start` with a function
``job(progress, cancel) -> result`` and an ``on_result`` callback that turns the result into
layers. The job runs in a napari ``thread_worker``; errors are shown in the widget (and as
a napari notification), never raised into the event loop, so napari keeps running.

Responsiveness (issue 12, measured by ``benchmarks/gui_responsiveness.py``):

- *Coalesced progress.* The worker's ``progress(fraction, message)`` only stores the
  latest value (no Qt signal per call); a GUI-thread timer shows it at most every
  :data:`UPDATE_MS` ms. A stage reporting every batch therefore costs the GUI at most
  ~10 repaints per second, and handlers connected to ``progress_bar.changed`` run at that
  rate too.
- *Busy state.* A negative fraction (``stages._common.report_busy``) turns the bar
  indeterminate (Qt's ``min = max = 0``) with the message, for steps that cannot measure
  their progress (UMAP's first compile, one long library call).
- *Heartbeat.* When no new message arrived for :data:`HEARTBEAT_S` s the status line reads
  "<last message> — still working (12 s)", counting up, so the user sees the job is alive
  even during a long call that reports nothing.
- *Results shown in steps.* ``on_result`` may be a generator function: each ``yield``
  gives the event loop a turn (a zero-delay timer runs the next step), so a widget that
  adds several layers (each costs 0.1-0.5 s: a new vispy visual, its shaders, its layer
  controls) can yield between them instead of freezing the window for their sum. The
  runner stays ``busy`` until the last step has run.
- *Threads.* The job runs inside ``limit_threads(gui_worker_threads())``: torch and BLAS
  use every core but one, which is left to the Qt event loop (on 2 cores: one compute
  thread).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from napari_cryohet.stages._common import Cancelled, CancelToken, gui_worker_threads, limit_threads

__all__ = ["StageRunner", "ProgressSlot", "UPDATE_MS", "HEARTBEAT_S"]

#: The GUI shows the worker's latest progress at most this often (ms).
UPDATE_MS = 100
#: After this many seconds without a new message the status line counts the seconds.
HEARTBEAT_S = 1.0


class ProgressSlot:
    """The latest ``(fraction, message)`` a worker reported; read by the GUI thread.

    ``put`` is cheap and thread-safe (the worker may call it every batch); ``take`` returns
    the value stored since the last ``take`` (``None`` if none) and how many reports it
    replaced.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[float, str] | None = None
        self._message = ""
        self.reports = 0

    def put(self, fraction: float, message: str = "") -> None:
        with self._lock:
            message = str(message)
            if not message and self._value is not None:  # a bare fraction keeps the pending message
                message = self._value[1]
            self._value = (float(fraction), message)
            self.reports += 1

    def take(self) -> tuple[float, str] | None:
        with self._lock:
            value, self._value = self._value, None
        return value


class StageRunner(Container):
    """Progress bar, status line and Cancel button; runs one job at a time.

    Attributes
    ----------
    worker
        The running napari worker, or ``None``.
    last_result, last_error
        What the latest job returned or raised (``None`` otherwise), for tests and scripts.
    busy
        ``True`` while a job runs.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.progress_bar, self.status, self.cancel_button], **kwargs)
        self._slot = ProgressSlot()
        self._timer = QTimer()
        self._timer.setInterval(UPDATE_MS)
        self._timer.timeout.connect(self._poll)
        self._message = ""
        self._message_time = 0.0
        self._shown_seconds = -1
        self.gui_updates = 0
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None
        self.token: CancelToken | None = None
        self.last_result: Any = None
        self.last_error: BaseException | None = None
        self._pending: tuple | None = None
        self._showing: Generator | None = None

    @property
    def busy(self) -> bool:
        """A job runs, waits to run, or its result is still being shown."""
        return self.worker is not None or self._pending is not None or self._showing is not None

    def start(
        self,
        job: Callable[[Callable[[float, str], None], CancelToken], Any],
        on_result: Callable[[Any], None],
        *,
        on_error: Callable[[BaseException], None] | None = None,
        queue: bool = False,
    ) -> None:
        """Run ``job(progress, cancel)`` in a thread; ``on_result(result)`` in the GUI thread.

        ``on_result`` may be a generator function; its steps (between ``yield``) then run
        one per event-loop turn.

        While a job runs, a new one is refused (``queue=False``, for long stages the user
        must cancel first) or kept to run next (``queue=True``, for quick interactive jobs
        such as decoding the volume of a clicked point: the latest request replaces any
        earlier waiting one, so the display always ends on the last click).
        """
        if self.busy:
            if queue:
                self._pending = (job, on_result, on_error)
                return
            self.status.value = "busy: wait for the running job or cancel it"
            return
        self.token = token = CancelToken()
        self.last_result, self.last_error = None, None
        self._slot = slot = ProgressSlot()
        n_threads = gui_worker_threads()

        def run_job(progress: Callable[[float, str], None], cancel: CancelToken) -> Any:
            with limit_threads(n_threads):
                return job(progress, cancel)

        # _ignore_errors: errors are shown by this runner; without it napari re-raises them into
        # the Qt event loop as well.
        worker = create_worker(run_job, slot.put, token, _start_thread=False, _ignore_errors=True)

        def returned(result: Any) -> None:
            self.last_result = result
            self._stop_updates()
            self._set_busy(False)
            self.progress_bar.value = 1000
            self.status.value = "done"
            try:
                outcome = on_result(result)
            except Exception as err:  # a bad layer update must not kill napari
                self._show_error(err, on_error)
                return
            if inspect.isgenerator(outcome):
                self.status.value = "showing the result…"
                self._showing = outcome
                QTimer.singleShot(0, lambda: self._show_step(on_error))

        def errored(err: BaseException) -> None:
            self._stop_updates()
            self._set_busy(False)
            if isinstance(err, Cancelled):
                self.status.value = "cancelled"
                self.last_error = err
                return
            self._show_error(err, on_error)

        def finished() -> None:
            self._stop_updates()
            self.worker = None
            self.cancel_button.enabled = False
            self._start_pending()

        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        self.worker = worker
        self.cancel_button.enabled = True
        self._set_busy(False)
        self.status.value = "running…"
        self.progress_bar.value = 0
        self._message, self._message_time, self._shown_seconds = "running…", time.perf_counter(), -1
        self._timer.start()
        worker.start()

    def _start_pending(self) -> None:
        if self.worker is None and self._showing is None:
            pending, self._pending = self._pending, None
            if pending is not None:
                self.start(pending[0], pending[1], on_error=pending[2])

    def _show_step(self, on_error) -> None:
        """Run the next step of a generator ``on_result``; schedule the one after."""
        steps = self._showing
        if steps is None:
            return
        try:
            next(steps)
        except StopIteration:
            self._showing = None
            self.status.value = "done"
        except Exception as err:  # a bad layer update must not kill napari
            self._showing = None
            self._show_error(err, on_error)
        else:
            QTimer.singleShot(0, lambda: self._show_step(on_error))
            return
        self._start_pending()

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop (it stops within one batch)."""
        if self.token is not None:
            self.token.cancel()
            self.status.value = self._message = "cancelling…"
            self._message_time, self._shown_seconds = time.perf_counter(), -1

    # ------------------------------------------------------------------ progress (GUI thread)
    def _poll(self) -> None:
        """Timer tick: show the worker's latest report, or the heartbeat when there is none."""
        value = self._slot.take()
        now = time.perf_counter()
        if value is not None:
            fraction, message = value
            self._set_busy(fraction < 0)
            if fraction >= 0:
                self.progress_bar.value = int(round(1000 * min(fraction, 1.0)))
            if message and message != self._message:
                self._message, self._message_time, self._shown_seconds = message, now, -1
                self.status.value = message
            self.gui_updates += 1
            return
        quiet = now - self._message_time
        if quiet >= HEARTBEAT_S and int(quiet) != self._shown_seconds:
            self._shown_seconds = int(quiet)
            self.status.value = f"{self._message} — still working ({int(quiet)} s)"
            self.gui_updates += 1

    def _set_busy(self, busy: bool) -> None:
        """Indeterminate bar (Qt shows a moving bar when min = max = 0) or the 0..1000 bar."""
        bar = self.progress_bar
        if busy and bar.max != 0:
            bar.min, bar.max = 0, 0
        elif not busy and bar.max == 0:
            bar.max = 1000

    @property
    def indeterminate(self) -> bool:
        """The bar shows "busy, progress unknown"."""
        return self.progress_bar.max == 0

    def _stop_updates(self) -> None:
        self._timer.stop()
        self._slot.take()  # a report left over is not shown after the result

    def _show_error(self, err: BaseException, on_error) -> None:
        self.last_error = err
        self.status.value = f"error: {err}"
        try:
            from napari.utils.notifications import show_error

            show_error(f"napari-cryohet: {err}")
        except Exception:  # pragma: no cover - notification manager unavailable
            pass
        if on_error is not None:
            on_error(err)
