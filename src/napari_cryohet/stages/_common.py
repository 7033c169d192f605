"""What every stage shares: progress reporting, cancellation, learning-rate schedules.

Stage run functions are synchronous and GUI-free (docs/design.md, "The stage protocol"):

    def run_x(dataset, config, *, progress=None, cancel=None) -> XResult

``progress(fraction, message)`` is called with ``fraction`` in [0, 1]; ``cancel`` is a
:class:`CancelToken` checked at least once per batch, and a cancelled run raises
:class:`Cancelled` after leaving every file already written intact. The plugin ring wraps
the same call in a napari ``thread_worker``; the CLI calls it directly.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["ProgressCallback", "CancelToken", "Cancelled", "report", "check_cancel"]

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


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.cancelled:
        raise Cancelled("cancelled by user")


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
