"""How the stage widgets sit in napari's window: scrollable, and tabbed together.

napari docks a widget at its full minimum height, so three stage forms opened from the
Plugins menu made a window ~2500 px tall. The menu entries therefore make a
:class:`ScrollDock` — the stage widget inside a ``QScrollArea`` (it shrinks to the space
it gets, with a scroll bar) — and, once napari has docked it, tabify it with the other
stage docks already open (:func:`tabify_stage_docks`), so the stages share one column of
the window as tabs while the session dock and the stack viewer stay visible.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea

__all__ = ["ScrollDock", "tabify_stage_docks", "STAGE_DOCK_PROPERTY"]

#: Qt property marking the docks of stage widgets (tabbed together).
STAGE_DOCK_PROPERTY = "cryohet_stage_dock"


class ScrollDock(QScrollArea):
    """A stage widget in a scroll area; attributes not its own are the widget's (``dock.run()``).

    Attributes
    ----------
    inner
        The stage widget (a magicgui ``Container``).
    """

    def __init__(self, widget: Any, *, stage: bool = True) -> None:
        super().__init__()
        self.inner = widget
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidget(getattr(widget, "native", widget))  # a magicgui Container, or a QWidget
        self.setMinimumHeight(120)
        if stage:
            self.setProperty(STAGE_DOCK_PROPERTY, True)
            QTimer.singleShot(0, lambda: tabify_stage_docks(self))

    def __getattr__(self, name: str) -> Any:
        # only reached for names QScrollArea does not have: the stage widget's API — but not
        # ``native``, or napari would dock the bare widget instead of this scroll area
        if name == "native":
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        inner = self.__dict__.get("inner")
        if inner is not None and not hasattr(QScrollArea, name) and hasattr(inner, name):
            setattr(inner, name, value)  # ``dock.index = 3`` sets the stage widget's attribute
        else:
            super().__setattr__(name, value)


def _dock_of(widget: Any) -> QDockWidget | None:
    parent = widget.parentWidget() if widget is not None else None
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def tabify_stage_docks(widget: Any) -> None:
    """Put the dock holding ``widget`` in a tab with the other stage docks in its area."""
    dock = _dock_of(widget)
    main = dock.parentWidget() if dock is not None else None
    if not isinstance(main, QMainWindow):
        return
    area = main.dockWidgetArea(dock)
    for other in main.findChildren(QDockWidget):
        inner = other.widget()
        if (other is not dock and other.isVisible() and main.dockWidgetArea(other) == area and inner is not None
                and _is_stage_dock(inner)):
            main.tabifyDockWidget(other, dock)
            dock.show()
            dock.raise_()
            return


def _is_stage_dock(widget: Any) -> bool:
    if widget.property(STAGE_DOCK_PROPERTY):
        return True
    return any(child.property(STAGE_DOCK_PROPERTY) for child in widget.findChildren(QScrollArea))
