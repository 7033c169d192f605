"""A widget form generated from a stage config's fields (docs/design.md, "The stage protocol").

Each field declared with :func:`napari_cryohet.stages.protocol.param` becomes one magicgui
widget: a check box for booleans, a combo box for fields with allowed values, a spin box for
integers, and a text box for decimals (so ``1e-3`` and ``0.0002`` can be typed), for
optional values (empty = not set) and for lists (``"10,20,33"``). The label is the field's
``label`` or its name in words plus its unit; the tooltip is its help text. The CLI builds
its flags from the same declarations (``cli/_config_args.py``), so a setting added to a
config shows up in both without being re-declared.
"""

from __future__ import annotations

import dataclasses
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

    Attributes
    ----------
    inputs
        Field name → its widget (also reachable as ``form.<field name>``).
    """

    def __init__(self, config_cls: type, *, fields: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                 defaults: dict[str, Any] | None = None, **kwargs: Any) -> None:
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
        super().__init__(widgets=list(self.inputs.values()), **kwargs)

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


def _make_widget(f: dataclasses.Field, base: type, optional: bool, is_tuple: bool, value: Any):
    meta = f.metadata
    common = {"label": _label(f), "tooltip": meta.get("help") or None, "name": f.name}
    if base is bool and not optional and not is_tuple:
        return CheckBox(value=bool(value), **common)
    if meta.get("choices") is not None and not is_tuple:
        choices = list(meta["choices"])
        return ComboBox(value=value, choices=choices + ([None] if optional else []), **common)
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
