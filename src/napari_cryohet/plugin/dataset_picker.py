"""The dataset picker every stage widget shares.

Lists the datasets of the window's :class:`~napari_cryohet.plugin.session.Session` (opened
with the reader, from sample data, or added by a script) by name; picking one makes it the
session's dataset in use, so every widget follows, and it follows the session when another
widget (or a reopened workspace) changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox

from napari_cryohet.plugin.session import Session

__all__ = ["DatasetPicker"]


class DatasetPicker(ComboBox):
    """Combo box of the session's datasets; ``.dataset`` is the picked one.

    Parameters
    ----------
    viewer
        The napari viewer (its session is used).
    kind
        Only list datasets of this type (``None``: any).
    on_pick
        Called with the dataset whenever the pick changes (and by :meth:`deliver`).
    """

    def __init__(self, viewer: Any, *, kind: type | None = None, label: str = "dataset",
                 on_pick: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        self.session = Session.for_viewer(viewer)
        self._kind = kind
        self._on_pick = on_pick
        self._delivered: Any = None
        kwargs.setdefault("tooltip", "The particle dataset this step works on (open a .star file or a sample "
                                     "from File ▸ Open Sample ▸ napari-cryohet).")
        super().__init__(label=label, choices=self._choices, **kwargs)
        self.session.dataset_changed.connect(self._follow)
        self.changed.connect(self._picked)
        self._follow(self.session.dataset, deliver=False)  # the widget calls deliver() once it is built

    def _names(self) -> list[str]:
        return [n for n, ds in self.session.datasets.items() if self._kind is None or isinstance(ds, self._kind)]

    def _choices(self, _widget: Any = None) -> list[str]:
        return self._names()

    def _follow(self, dataset: Any, *, deliver: bool = True) -> None:
        self.reset_choices()
        name = self.session.dataset_name(dataset) if dataset is not None else None
        if name is not None and name in self._names() and self.value != name:
            with self.changed.blocked():
                self.value = name
        if deliver:
            self.deliver()

    def _picked(self, *_: Any) -> None:
        picked = self.dataset
        if picked is not None and picked is not self.session.dataset:
            self.session.set_dataset(picked)
        self.deliver()

    def deliver(self, *_: Any) -> None:
        """Hand the picked dataset to ``on_pick`` if it is not the one handed over last."""
        picked = self.dataset
        if self._on_pick is not None and picked is not None and picked is not self._delivered:
            self._delivered = picked
            self._on_pick(picked)

    @property
    def dataset(self) -> Any:
        """The picked dataset, or ``None``."""
        ds = self.session.datasets.get(self.value) if self.value is not None else None
        return ds if ds is not None and (self._kind is None or isinstance(ds, self._kind)) else None
