"""Run a stage off the GUI thread with a progress bar and a cancel button.

Every stage widget embeds one :class:`StageRunner` (a magicgui ``Container``): the widget
builds a stage config from its form and calls :meth:`StageRunner.start` with a function
``job(progress, cancel) -> result`` and an ``on_result`` callback that turns the result into
layers. The job runs in a napari ``thread_worker``; progress calls from the worker thread
reach the progress bar through a queued Qt signal; errors are shown in the widget (and as a
napari notification), never raised into the event loop, so napari keeps running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from napari_cryohet.stages._common import Cancelled, CancelToken

__all__ = ["StageRunner"]


class _ProgressRelay(QObject):
    """Carries (fraction, message) from the worker thread to the GUI thread."""

    progressed = Signal(float, str)


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
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None
        self.token: CancelToken | None = None
        self.last_result: Any = None
        self.last_error: BaseException | None = None
        self._pending: tuple | None = None

    @property
    def busy(self) -> bool:
        """A job runs or waits to run."""
        return self.worker is not None or self._pending is not None

    def start(
        self,
        job: Callable[[Callable[[float, str], None], CancelToken], Any],
        on_result: Callable[[Any], None],
        *,
        on_error: Callable[[BaseException], None] | None = None,
        queue: bool = False,
    ) -> None:
        """Run ``job(progress, cancel)`` in a thread; ``on_result(result)`` in the GUI thread.

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
        relay = self._relay

        def progress(fraction: float, message: str = "") -> None:
            relay.progressed.emit(float(fraction), str(message))

        # _ignore_errors: errors are shown by this runner; without it napari re-raises them into
        # the Qt event loop as well.
        worker = create_worker(job, progress, token, _start_thread=False, _ignore_errors=True)

        def returned(result: Any) -> None:
            self.last_result = result
            self.progress_bar.value = 1000
            self.status.value = "done"
            try:
                on_result(result)
            except Exception as err:  # a bad layer update must not kill napari
                self._show_error(err, on_error)

        def errored(err: BaseException) -> None:
            if isinstance(err, Cancelled):
                self.status.value = "cancelled"
                self.last_error = err
                return
            self._show_error(err, on_error)

        def finished() -> None:
            self.worker = None
            self.cancel_button.enabled = False
            pending, self._pending = self._pending, None
            if pending is not None:
                self.start(pending[0], pending[1], on_error=pending[2])

        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        self.worker = worker
        self.cancel_button.enabled = True
        self.status.value = "running…"
        self.progress_bar.value = 0
        worker.start()

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop (it stops within one batch)."""
        if self.token is not None:
            self.token.cancel()
            self.status.value = "cancelling…"

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress_bar.value = int(round(1000 * fraction))
        if message:
            self.status.value = message

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
