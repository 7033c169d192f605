"""The simulator as a workspace stage: a recipe source is simulated once and read back identically."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.cli import main
from napari_cryohet.stages.simulate.stage import SimulateConfig
from napari_cryohet.stages.workspace import Workspace, dataset_source


def test_recipe_workspace_simulates_once_and_reopens_identically(tmp_path):
    source = {"recipe": "adk_chain", "args": {"n_particles": 12, "seed": 3, "snr": 0.1}}
    ws = Workspace.create(tmp_path / "ws", source)
    ds = ws.dataset
    assert len(ds) == 12 and [m["run_id"] for m in ws.runs()] == ["simulate/0001"]
    assert dataset_source(ds) == source  # the dataset can remake its workspace
    again = Workspace.open(tmp_path / "ws").dataset
    assert [m["run_id"] for m in ws.runs()] == ["simulate/0001"]  # not simulated twice
    np.testing.assert_array_equal(again.get_images(np.arange(12)), ds.get_images(np.arange(12)))
    np.testing.assert_allclose(again.rotations, ds.rotations, atol=1e-6)
    np.testing.assert_array_equal(again.ground_truth["coords_a"], ds.ground_truth["coords_a"])
    # the images are those of the recipe itself (an independent call, same seed)
    from napari_cryohet.stages.simulate import adk_chain

    direct = adk_chain(n_particles=12, seed=3, snr=0.1)
    np.testing.assert_allclose(ds.get_images(np.arange(12)), direct.get_images(np.arange(12)), atol=1e-5)


def test_box_arms_toy_round_trips(tmp_path):
    ws = Workspace.create(tmp_path / "ws", {"recipe": "box_arms_2d", "args": {"n_particles": 10}})
    toy = ws.dataset
    assert type(toy).__name__ == "Toy2DDataset" and len(toy) == 10
    np.testing.assert_array_equal(Workspace.open(tmp_path / "ws").dataset.projections, toy.projections)


def test_unknown_recipe_setting_names_the_field():
    with pytest.raises(ValueError, match=r"SimulateConfig\.args: expected settings of adk_chain"):
        SimulateConfig(recipe="adk_chain", args={"temperature": 300})
    with pytest.raises(ValueError, match=r"SimulateConfig\.recipe: expected one of"):
        SimulateConfig(recipe="ribosome")


def test_cli_simulate_into_a_workspace(tmp_path, capsys):
    assert main(["simulate", "adk_chain", "--n", "8", "--workspace", str(tmp_path / "ws")]) == 0
    assert "simulate/0001: 8 particles of adk_chain" in capsys.readouterr().out
    assert len(Workspace.open(tmp_path / "ws").dataset) == 8
