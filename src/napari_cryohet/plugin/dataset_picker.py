"""The dataset picker every stage widget shares.

A layer carries a dataset when its ``metadata[DATASET_KEY]`` holds one (the ``.star``
reader, the sample-data contributions and the stack viewer put it there). The picker lists
those layers by name and follows the layer list as layers are added or removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox

from napari_cryohet.plugin._reader import DATASET_KEY

__all__ = ["DatasetPicker"]


class DatasetPicker(ComboBox):
    """Combo box of the viewer's dataset-carrying layers; ``.dataset`` is the picked one.

    Parameters
    ----------
    viewer
        The napari viewer whose layers are listed.
    kind
        Only list layers whose dataset is an instance of this type (``None``: any).
    on_pick
        Called with the dataset whenever the pick changes to a different dataset (and by
        :meth:`deliver`), so a widget need not track the combo box itself.
    """

    def __init__(
        self,
        viewer: Any,
        *,
        kind: type | None = None,
        label: str = "dataset",
        on_pick: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._viewer = viewer
        self._kind = kind
        self._on_pick = on_pick
        self._delivered: Any = None
        super().__init__(label=label, choices=self._choices, **kwargs)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self.changed.connect(self.deliver)

    def deliver(self, *_: Any) -> None:
        """Hand the picked dataset to ``on_pick`` if it is not the one handed over last."""
        picked = self.dataset
        if self._on_pick is not None and picked is not None and picked is not self._delivered:
            self._delivered = picked
            self._on_pick(picked)

    def dataset_layers(self) -> list:
        """Layers that carry a dataset (of ``kind``), in layer-list order."""
        out = []
        for lyr in self._viewer.layers:
            ds = lyr.metadata.get(DATASET_KEY)
            if ds is not None and (self._kind is None or isinstance(ds, self._kind)):
                out.append(lyr)
        return out

    @property
    def dataset(self) -> Any:
        """The dataset of the picked layer, or ``None``."""
        for lyr in self.dataset_layers():
            if lyr.name == self.value:
                return lyr.metadata[DATASET_KEY]
        return None

    def _choices(self, _widget: Any = None) -> list[str]:
        return [lyr.name for lyr in self.dataset_layers()]

    def _refresh(self, *_: Any) -> None:
        self.reset_choices()
