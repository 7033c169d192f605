"""What every stage shares: progress reporting, cancellation, learning-rate schedules.

Stage run functions are synchronous and GUI-free (docs/design.md, "The stage protocol"):

    def run_x(dataset, config, *, progress=None, cancel=None) -> XResult

``progress(fraction, message)`` is called with ``fraction`` in [0, 1], or with
:data:`BUSY` (a negative fraction, :func:`report_busy`) while a step cannot measure its
progress (a compile, one long library call): the GUI then shows an indeterminate bar with
the message. ``cancel`` is a
:class:`CancelToken` checked at least once per batch, and a cancelled run raises
:class:`Cancelled` after leaving every file already written intact. The plugin ring wraps
the same call in a napari ``thread_worker``; the CLI calls it directly.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["ProgressCallback", "CancelToken", "Cancelled", "report", "report_busy", "BUSY", "check_cancel",
           "limit_threads", "gui_worker_threads"]

#: The fraction :func:`report_busy` passes: "working, progress unknown".
BUSY = -1.0

ProgressCallback = Callable[[float, str], None]


class Cancelled(RuntimeError):
    """Raised inside a stage when its :class:`CancelToken` was set."""


class CancelToken:
    """A thread-safe flag a GUI or a signal handler sets to stop a running stage."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def report(progress: ProgressCallback | None, fraction: float, message: str = "") -> None:
    """Call ``progress`` if given (fraction clipped to [0, 1])."""
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def report_busy(progress: ProgressCallback | None, message: str) -> None:
    """Call ``progress(BUSY, message)``: a step whose progress cannot be measured started."""
    if progress is not None:
        progress(BUSY, message)


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.cancelled:
        raise Cancelled("cancelled by user")


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


def gui_worker_threads() -> int:
    """Threads a stage run from the GUI may use: every core but one (at least 1).

    The Qt event loop needs a core of its own to stay responsive; on a 2-core machine the
    job thread plus torch's/BLAS's default two compute threads would take both.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` torch intra-op threads and ``n`` BLAS/OpenMP threads.

    torch's limit is per calling thread (OpenMP's thread-count setting belongs to the
    thread that sets it), so this is entered in the worker thread that runs the job and
    restores that thread's value on exit. BLAS limits (threadpoolctl) are process-wide: the
    first of several overlapping blocks sets them and the last one to leave restores them.
    """
    n = max(1, int(n))
    global _blas_users, _blas_limiter
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None and before > n:
        torch.set_num_threads(n)
    with _blas_lock:
        if _blas_users == 0:
            try:
                from threadpoolctl import threadpool_limits

                _blas_limiter = threadpool_limits(limits=n)
            except Exception:  # pragma: no cover - threadpoolctl missing or a library it cannot drive
                _blas_limiter = None
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
        if torch is not None and before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


#: Learning-rate schedules understood by :func:`set_scheduled_lr`.
LR_SCHEDULES = ("cosine", "constant")


def set_scheduled_lr(optimizer, base_lrs, schedule: str, step: int, total_steps: int) -> None:
    """Set each parameter group's learning rate for optimiser step ``step`` of ``total_steps``.

    ``"constant"`` keeps ``base_lrs``; ``"cosine"`` decays them as ``½(1 + cos(π·step/total))``
    to 0 at the last step, which damps the gradient noise of low-SNR data in the final
    iterate. Computed from the step index alone (no scheduler state), so a run resumed from
    a checkpoint follows the same schedule.

    Parameters
    ----------
    optimizer
        A ``torch.optim`` optimiser.
    base_lrs
        One learning rate per parameter group.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    factor = 1.0 if schedule == "constant" else 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = float(base) * factor
