"""A widget form generated from a stage config's fields (docs/design.md, "The stage protocol").

Each field declared with :func:`napari_cryohet.stages.protocol.param` becomes one magicgui
widget: a check box for booleans, a combo box for fields with allowed values, a spin box for
integers, and a text box for decimals (so ``1e-3`` and ``0.0002`` can be typed), for
optional values (empty = not set) and for lists (``"10,20,33"``). The label is the field's
``label`` or its name in words plus its unit; the tooltip is its help text, then its unit,
allowed values and default. The CLI builds its flags from the same declarations
(``cli/_config_args.py``), so a setting added to a config shows up in both without being
re-declared.

So that a dock fits a 1600 × 1000 screen, only the fields a config names in its
``PRIMARY`` class variable are always shown; the others sit in a collapsible "Advanced
settings" section (superqt's ``QCollapsible``), collapsed at first. A config without
``PRIMARY`` shows every field.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, SpinBox

from napari_cryohet.stages.protocol import field_type

__all__ = ["ConfigForm"]


class ConfigForm(Container):
    """Form for the fields of ``config_cls``.

    Parameters
    ----------
    config_cls
        A :class:`~napari_cryohet.stages.protocol.StageConfig` subclass.
    fields
        Field names to show, in order (default: every field except ``exclude``).
    exclude
        Field names left out (set by the widget itself, or fixed).
    defaults
        Starting values differing from the config's defaults.
    primary
        Fields always shown (default: the config's ``PRIMARY``; empty: every field shown).

    Attributes
    ----------
    inputs
        Field name → its widget (also reachable as ``form.<field name>``).
    advanced_names
        The fields in the "Advanced settings" section, in order (empty: no section).
    advanced_section
        The ``QCollapsible`` holding them (``None`` when there are none);
        ``form.advanced_section.expand()`` opens it.
    """

    def __init__(self, config_cls: type, *, fields: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                 defaults: dict[str, Any] | None = None, primary: tuple[str, ...] | None = None,
                 **kwargs: Any) -> None:
        self.config_cls = config_cls
        start = dataclasses.replace(config_cls(), **(defaults or {}))
        by_name = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
        names = fields if fields is not None else tuple(n for n in by_name if n not in exclude)
        self.inputs: dict[str, Any] = {}
        for name in names:
            base, optional, is_tuple = field_type(config_cls, by_name[name])
            if base is dict:
                continue
            self.inputs[name] = _make_widget(by_name[name], base, optional, is_tuple, getattr(start, name))
        primary = tuple(getattr(config_cls, "PRIMARY", ()) if primary is None else primary)
        shown = [n for n in self.inputs if n in primary] if primary else list(self.inputs)
        self.advanced_names: tuple[str, ...] = tuple(n for n in self.inputs if n not in shown)
        super().__init__(widgets=[self.inputs[n] for n in shown], **kwargs)
        self.advanced_section = None
        if self.advanced_names:
            self._add_advanced_section()

    def _add_advanced_section(self) -> None:
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QFrame, QScrollArea
        from superqt import QCollapsible

        self._advanced_form = Container(widgets=[self.inputs[n] for n in self.advanced_names])
        self._advanced_form.margins = (0, 0, 0, 0)
        self.advanced_section = QCollapsible(f"Advanced settings ({len(self.advanced_names)})",
                                             expandedIcon="▼", collapsedIcon="▶")
        self.advanced_section.setDuration(120)
        # a scroll area keeps the opened section within about 24 text lines (QScrollArea's
        # size hint), so an opened section does not push the rest of the dock off screen
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self._advanced_form.native)
        self.advanced_section.addWidget(scroll)
        self.native.layout().addWidget(self.advanced_section)

    def __getattr__(self, name: str) -> Any:
        inputs = self.__dict__.get("inputs", {})
        if name in inputs:
            return inputs[name]
        return super().__getattr__(name)

    def values(self) -> dict[str, Any]:
        """Field name → the typed value in the form (``ValueError`` naming a bad entry)."""
        out = {}
        for name, widget in self.inputs.items():
            out[name] = widget.parse_value() if isinstance(widget, _TypedLineEdit) else widget.value
        return out

    def config(self, **overrides: Any):
        """The config the form describes, with ``overrides`` (fields the widget sets itself)."""
        return self.config_cls(**{**self.values(), **overrides})

    def set_config(self, config: Any) -> None:
        """Show ``config``'s values in the form (a shown result's settings, say)."""
        for name, widget in self.inputs.items():
            value = getattr(config, name)
            if isinstance(widget, _TypedLineEdit):
                widget.show_value(value)
            else:
                widget.value = value


def _label(f: dataclasses.Field) -> str:
    text = f.metadata.get("label") or f.name.replace("_", " ")
    unit = f.metadata.get("unit")
    return f"{text} ({unit})" if unit and unit not in text else text  # not "epochs (epochs)"


def _tooltip(f: dataclasses.Field) -> str | None:
    """The field's help (wrapped), then one line: unit, allowed values, default."""
    meta = f.metadata
    facts = []
    if meta.get("unit"):
        facts.append(f"unit: {meta['unit']}")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if meta.get("choices") is not None:
        facts.append("one of: " + ", ".join(map(str, meta["choices"])))
    elif lo is not None and hi is not None:
        facts.append(f"allowed: {lo:g} to {hi:g}")
    elif lo is not None:
        facts.append(f"allowed: {lo:g} or more")
    elif hi is not None:
        facts.append(f"allowed: up to {hi:g}")
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        default = "on" if default else "off"
    elif isinstance(default, tuple):
        default = ",".join(map(str, default)) or None
    elif isinstance(default, float):
        default = f"{default:g}"
    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
        facts.append(f"default: {'empty' if default is None else default}")
    lines = textwrap.wrap(meta.get("help") or "", width=72)
    if facts:
        lines.append("; ".join(facts))
    return "\n".join(lines) or None


def _make_widget(f: dataclasses.Field, base: type, optional: bool, is_tuple: bool, value: Any):
    meta = f.metadata
    common = {"label": _label(f), "tooltip": _tooltip(f), "name": f.name}
    if base is bool and not optional and not is_tuple:
        return CheckBox(value=bool(value), **common)
    if meta.get("choices") is not None and not is_tuple:
        # shown in words ("normal modes", not "normal_modes"); the value stays the setting's own
        choices = [(c.replace("_", " "), c) if isinstance(c, str) else (str(c), c) for c in meta["choices"]]
        return ComboBox(value=value, choices=choices + ([("None", None)] if optional else []), **common)
    if base is int and not optional and not is_tuple:
        lo = meta.get("minimum")
        hi = meta.get("maximum")
        return SpinBox(value=int(value), min=int(lo) if lo is not None else -(2**31),
                       max=int(hi) if hi is not None else 2**31 - 1, **common)
    return _TypedLineEdit(base, optional, is_tuple, value, **common)


class _TypedLineEdit(LineEdit):
    """A text box holding a number, an optional value (empty = not set) or a list."""

    def __init__(self, base: type, optional: bool, is_tuple: bool, value: Any, **kwargs: Any) -> None:
        self._base, self._optional, self._is_tuple = base, optional, is_tuple
        super().__init__(value="", **kwargs)
        self.show_value(value)

    def show_value(self, value: Any) -> None:
        if value is None:
            self.value = ""
        elif self._is_tuple:
            self.value = ",".join(map(str, value))
        else:
            self.value = f"{value:g}" if isinstance(value, float) else str(value)

    def parse_value(self) -> Any:
        text = str(self.value).strip()
        if text == "" and (self._optional or self._is_tuple):
            return None if self._optional else ()
        try:
            if self._is_tuple:
                return tuple(self._base(part) for part in text.replace(" ", "").split(",") if part)
            return self._base(text)
        except ValueError:
            kind = f"a list of {self._base.__name__}" if self._is_tuple else f"a {self._base.__name__}"
            raise ValueError(f"{self.label}: expected {kind}{' or empty' if self._optional else ''}, "
                             f"got {text!r}") from None
