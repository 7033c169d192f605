"""Open a particle file with the options napari's *File ▸ Open* cannot take.

*File ▸ Open* reads a ``.star``/``.cs``/``.mrcs`` as it is. Real data often needs more: the
stacks were moved (cryoDRGN's ``--datadir``), the contrast is inverted (dark particles),
poses and CTF come as cryoDRGN pickles, the pixel size is missing. :class:`OpenParticlesForm`
(in the session dock) takes the same options as ``load_dataset`` and the ``cryohet``
commands, and opens the particles into the window's session; a workspace made for them
stores the options. After opening, the contrast check
(:mod:`napari_cryohet.core.contrast`) says which way the images look (the session shows
it for files opened any way, :meth:`Session.check_contrast`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, Container, FileEdit, FloatSpinBox, Label, PushButton

from napari_cryohet.io.errors import CryohetInputError
from napari_cryohet.plugin.session import Session

__all__ = ["OpenParticlesForm"]


def _text(edit: FileEdit) -> str:
    # the line edit itself: FileEdit.value of an empty field is the working folder
    return str(edit.line_edit.value).strip()


class OpenParticlesForm(Container):
    """Particle file + how to read it, and an *Open particles* button.

    Attributes
    ----------
    path, datadir, poses, ctf
        ``FileEdit`` fields (empty: not used).
    contrast_inverted
        ``CheckBox``: multiply the images by −1 when read.
    apix
        ``FloatSpinBox``: pixel size in Å (0: from the files).
    open_button, message
        The button and the outcome (the dataset opened, or what is wrong; then the contrast).
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.path = FileEdit(label="particle file", filter="*.star *.cs *.mrcs *.mrc", value="",
                             tooltip="A RELION .star file, a cryoSPARC .cs file or a .mrcs stack")
        self.datadir = FileEdit(label="stacks folder", mode="d", value="",
                                tooltip="Only if the particle stacks are not where the file says (moved or copied "
                                        "data; cryoDRGN's --datadir). For a cryoSPARC .cs file: the project folder. "
                                        "Empty: where the file says")
        self.contrast_inverted = CheckBox(
            text="contrast inverted (dark particles)",
            tooltip="Tick when the particles show density dark on a light background (RELION and this program "
                    "expect it white on dark): every image is multiplied by −1 when read. After opening, the "
                    "contrast check below says which way the images look")
        self.poses = FileEdit(label="cryoDRGN poses", filter="*.pkl", value="",
                              tooltip="Optional: a cryoDRGN poses .pkl (for a .mrcs stack, or replacing the file's)")
        self.ctf = FileEdit(label="cryoDRGN CTF", filter="*.pkl", value="",
                            tooltip="Optional: a cryoDRGN CTF .pkl (for a .mrcs stack, or replacing the file's)")
        self.apix = FloatSpinBox(label="pixel size (Å)", value=0.0, min=0.0, max=100.0, step=0.01,
                                 tooltip="Å per pixel; 0 takes it from the files")
        self.open_button = PushButton(text="Open particles")
        self.message = Label(value="")
        self.message.native.setWordWrap(True)
        self.message.native.setMinimumWidth(320)  # a short message on one line, a long error wrapped
        for edit in (self.path, self.datadir, self.poses, self.ctf):
            edit.line_edit.value = ""
            edit.line_edit.native.setMinimumWidth(120)
        super().__init__(widgets=[self.path, self.datadir, self.contrast_inverted, self.poses, self.ctf, self.apix,
                                  self.open_button, self.message])
        self.open_button.changed.connect(lambda *_: self.open())

    def options(self) -> dict[str, Any]:
        """The ``load_dataset`` options the form holds (empty fields left out)."""
        out: dict[str, Any] = {}
        for name, edit in (("datadir", self.datadir), ("poses", self.poses), ("ctf", self.ctf)):
            if _text(edit):
                out[name] = _text(edit)
        if self.contrast_inverted.value:
            out["contrast_inverted"] = True
        if self.apix.value > 0:
            out["apix"] = float(self.apix.value)
        return out

    def open(self) -> Any:
        """Open the file with the form's options into the session; returns the dataset or ``None``."""
        from napari_cryohet.io.load_particles import load_dataset

        path = _text(self.path)
        if not path:
            self.message.value = "choose a particle file first"
            return None
        try:
            dataset = load_dataset(path, **self.options())
        except (CryohetInputError, ValueError, OSError) as err:
            self.message.value = str(err)
            return None
        name = Path(path).stem
        self.session.add_dataset(dataset, name)
        self.session.check_contrast(dataset)  # shown below the form by the session dock
        self.message.value = f"opened {len(dataset)} particles ({dataset.box_size} px, {dataset.apix:g} Å/px)"
        return dataset
