"""Generated settings forms, CLI flags and the workspace picker agree with the config fields."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from napari_cryohet.cli._config_args import add_config_args, config_from_args
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._workspace_picker import NO_RUN, WorkspacePicker
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).parents[2] / "sample_data" / "adk_small" / "particles.star"


def test_form_has_every_field_with_its_default_and_round_trips(toy, qtbot):
    form = ConfigForm(toy.ToyConfig)
    assert list(form.inputs) == [f.name for f in dataclasses.fields(toy.ToyConfig)]
    assert form.config() == toy.ToyConfig()
    assert form.inputs["rate"].tooltip == "step size"
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


def test_workspace_picker_lists_finished_runs_of_accepted_stages(toy, tmp_path, qtbot):
    from napari_cryohet.io.load_particles import load_dataset

    picker = WorkspacePicker("toy")
    assert picker.workspace_for(None) is None  # no folder: in memory
    dataset = load_dataset(STAR)
    picker.folder.value = str(tmp_path / "ws")
    ws = picker.workspace_for(dataset)
    assert isinstance(ws, Workspace) and Path(ws.info["source"]["path"]) == STAR.resolve()
    ws._dataset = toy.toy_dataset(len(dataset))
    ws.run("toy", toy.ToyConfig(epochs=1))
    ws.run("toy", toy.ToyConfig(epochs=2))
    picker.refresh()
    assert list(picker.inputs["target"].choices) == [NO_RUN, "toy/0002", "toy/0001"]
    assert picker.input_ids() == {}  # an optional input starts at "(none)"
    picker.inputs["target"].value = "toy/0001"
    assert picker.input_ids() == {"target": "toy/0001"}
    picker.inputs["target"].value = NO_RUN
    assert picker.input_ids() == {}
