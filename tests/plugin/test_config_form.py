"""Generated settings forms, CLI flags and the workspace picker agree with the config fields."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from napari_cryohet.cli._config_args import add_config_args, config_from_args
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.stages.chainfit import ChainFitConfig
from napari_cryohet.stages.spectral import SpectralConfig
from napari_cryohet.stages.vae import VAEConfig

STAGE_CONFIGS = (SpectralConfig, ChainFitConfig, VAEConfig)

STAR = Path(__file__).parents[2] / "sample_data" / "adk_small" / "particles.star"


def test_form_has_every_field_with_its_default_and_round_trips(toy, qtbot):
    form = ConfigForm(toy.ToyConfig)
    assert list(form.inputs) == [f.name for f in dataclasses.fields(toy.ToyConfig)]
    assert form.config() == toy.ToyConfig()
    assert form.inputs["rate"].tooltip == "step size\nallowed: 0 to 1; default: 0.5"
    assert form.advanced_section is None  # no PRIMARY: every field shown
    form.rate.value = "1e-1"
    form.masked.value = "2, 5"
    form.mode.value = "input"
    cfg = form.config()
    assert (cfg.rate, cfg.masked, cfg.mode) == (0.1, (2, 5), "input")
    form.rate.value = "fast"
    with pytest.raises(ValueError, match=r"rate: expected a float, got 'fast'"):
        form.config()
    form.rate.value = "3"
    with pytest.raises(ValueError, match=r"ToyConfig\.rate: expected a value <= 1"):
        form.config()
    form.set_config(toy.ToyConfig(rate=0.125, masked=(7,)))
    assert form.config() == toy.ToyConfig(rate=0.125, masked=(7,))


@pytest.mark.parametrize("config_cls", STAGE_CONFIGS, ids=lambda c: c.__name__)
def test_stage_forms_show_the_primary_fields_and_collapse_the_rest(config_cls, qtbot):
    form = ConfigForm(config_cls)
    qtbot.addWidget(form.native)
    form.native.show()
    collapsed = form.native.sizeHint().height()
    # a dock's settings take a few rows: three docks and their buttons fit a 1000-px screen
    assert collapsed <= 250
    assert [w.name for w in form] == [n for n in form.inputs if n in config_cls.PRIMARY]
    assert set(config_cls.PRIMARY) <= {f.name for f in dataclasses.fields(config_cls)}
    assert set(form.advanced_names) == set(form.inputs) - set(config_cls.PRIMARY)
    assert not form.advanced_section.isExpanded()
    form.advanced_section.expand(animate=False)
    qtbot.waitUntil(lambda: form.native.sizeHint().height() > collapsed + 150, timeout=2000)
    # hidden fields still reach the config, and set_config reaches them
    name = "seed"
    getattr(form, name).value = 7
    assert form.config().seed == 7
    form.set_config(config_cls())
    assert form.config() == config_cls()


@pytest.mark.parametrize("config_cls", STAGE_CONFIGS, ids=lambda c: c.__name__)
def test_stage_settings_are_described_in_plain_words(config_cls, qtbot):
    form = ConfigForm(config_cls)
    qtbot.addWidget(form.native)
    for f in dataclasses.fields(config_cls):
        meta, label = f.metadata, form.inputs[f.name].label
        assert "_" not in label and len(label) <= 40, (f.name, label)
        assert len(meta["help"]) >= 40 and "seed 0" not in meta["help"], f.name
        tip = form.inputs[f.name].tooltip
        assert tip.startswith(meta["help"][:30]) and "default:" in tip, f.name
        # a section sign comes with the paper's author and year
        assert "§" not in meta["help"] or re.search(r"et al\. (19|20)\d\d|& \w+ (19|20)\d\d", meta["help"]), f.name
        base = form.inputs[f.name]
        numeric = meta.get("choices") is None and f.type.split(" |")[0] in ("int", "float")
        if numeric and not meta.get("runtime") and f.name != "seed":
            # a number the user picks comes with a sensible range or the paper's value
            assert any(w in meta["help"] for w in ("typical", "as in", " in ", "= ")), (f.name, base.label)


def test_cli_flags_come_from_the_same_fields(toy):
    parser = argparse.ArgumentParser()
    add_config_args(parser, toy.ToyConfig)
    assert config_from_args(toy.ToyConfig, parser.parse_args([])) == toy.ToyConfig()
    args = parser.parse_args(["--rate", "0.2", "--masked", "1,3", "--mode", "input", "--epochs", "2"])
    assert config_from_args(toy.ToyConfig, args) == toy.ToyConfig(rate=0.2, masked=(1, 3), mode="input", epochs=2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "other"])
    help_text = parser.format_help()
    assert "--rate" in help_text and "step size" in help_text
