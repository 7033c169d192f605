"""Shared test configuration.

napari's ``make_napari_viewer`` fixture comes from napari's pytest plugin; Xvfb from
pytest-xvfb (``make test`` passes ``-p xvfb``). Tests are headless and CPU-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryohet.stages._common import check_cancel, report
from napari_cryohet.stages.checkpoint import Checkpointer
from napari_cryohet.stages.protocol import (
    Embedding,
    StageConfig,
    StageResult,
    dataset_indices,
    param,
)
from napari_cryohet.stages.registry import InputSpec, StageSpec

torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator (tests are reproducible)."""
    return np.random.default_rng(12345)


# ---------------------------------------------------------------- a toy stage
# A tiny iterative stage used to test the protocol, the checkpointer, the workspace and the
# generated forms: it "trains" one number per particle towards the particle's table value
# ``value`` (or an input embedding's first column), one step of size ``rate`` per epoch,
# checkpointing every epoch — the same shape as a real training stage.



@dataclass
class ToyConfig(StageConfig):
    STAGE = "toy"
    epochs: int = param(4, help="passes", minimum=0)
    rate: float = param(0.5, help="step size", minimum=0.0, maximum=1.0)
    mode: str = param("table", help="target", choices=("table", "input"))
    masked: tuple[int, ...] = param((), help="particles kept at zero")
    device: str = param("cpu", help="where to compute", runtime=True)

    def validate(self) -> None:
        if self.mode == "input" and self.epochs == 0:
            self.fail("epochs", "at least 1 with mode='input'", self.epochs)


class ToyResult(StageResult):
    STAGE = "toy"

    def __init__(self, values: np.ndarray, indices: np.ndarray, epochs_run: int):
        self.values, self.indices, self.epochs_run = values, indices, epochs_run

    @property
    def particle_indices(self) -> np.ndarray:
        return self.indices

    def embedding(self) -> Embedding:
        return Embedding(self.values[:, None], self.indices, run_id=self.run_id, name="toy values")

    def _save(self, run_dir: Path) -> None:
        np.savez(run_dir / "toy.npz", values=self.values, indices=self.indices, epochs_run=self.epochs_run)

    @classmethod
    def _load(cls, run_dir: Path) -> ToyResult:
        with np.load(run_dir / "toy.npz", allow_pickle=False) as z:
            return cls(z["values"], z["indices"], int(z["epochs_run"]))


CALLS = {"epochs_run": 0}


def run_toy(dataset, config: ToyConfig, *, inputs=None, progress=None, cancel=None, run_dir=None,
            on_epoch=None) -> ToyResult:
    indices = dataset_indices(dataset)
    if config.mode == "input":
        target = inputs["target"].aligned_to(dataset)[:, 0]
    else:
        target = dataset.table["value"].to_numpy(dtype=np.float64)
    w = torch.zeros(len(indices), dtype=torch.float64)
    start = 0
    ckpt = None
    if run_dir is not None:
        ckpt = Checkpointer(run_dir, config=config, n_particles=len(indices), particle_indices=indices)
        state = ckpt.load(progress=progress)
        if state is not None:
            w, start = state["w"], int(state["epoch"])
    for epoch in range(start, config.epochs):
        check_cancel(cancel)
        w = w + config.rate * (torch.tensor(target) - w)
        w[list(config.masked)] = 0.0
        CALLS["epochs_run"] += 1
        if ckpt is not None:
            ckpt.save({"w": w, "epoch": epoch + 1})
        report(progress, (epoch + 1) / max(config.epochs, 1), f"epoch {epoch + 1}/{config.epochs}")
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return ToyResult(w.numpy(), indices, config.epochs)


TOY_STAGE = StageSpec(name="toy", title="toy fit", config=ToyConfig, result=ToyResult, run=run_toy,
                      inputs={"target": InputSpec(kind="embedding", stages=("toy",), required=False)})


@pytest.fixture
def toy(monkeypatch):
    """This module, with the toy stage registered in the workspace's stage table."""
    import sys

    from napari_cryohet.stages import registry

    monkeypatch.setitem(registry.STAGES, "toy", TOY_STAGE)
    CALLS["epochs_run"] = 0
    return sys.modules[__name__]


def toy_dataset(n: int = 12, seed: int = 0):
    """A tiny ParticleDataset whose table column ``value`` is the toy stage's target."""
    import pandas as pd

    from napari_cryohet.core.particle_dataset import ParticleDataset

    rng = np.random.default_rng(seed)
    return ParticleDataset(images=np.zeros((n, 4, 4), np.float32), apix=1.0,
                           table=pd.DataFrame({"value": rng.normal(size=n)}))


@pytest.fixture
def spectral_takes_toy(toy, monkeypatch):
    """The spectral stage with its ``features`` input also accepting toy runs (a stand-in for a VAE run)."""
    import dataclasses

    from napari_cryohet.stages import registry
    from napari_cryohet.stages.spectral.stage import STAGE

    features = STAGE.inputs["features"]
    spec = dataclasses.replace(STAGE, inputs={"features": dataclasses.replace(
        features, stages=(*features.stages, "toy"))})
    monkeypatch.setitem(registry.STAGES, "spectral", spec)
    return toy


@pytest.fixture
def one_thread():
    """One intra-op torch thread: faster than two for small tensors on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inverted_files(root: Path, *, n_particles: int, seed: int) -> tuple[Path, Path]:
    """One AdK conformation (32 px at 3 Å, SNR 0.05, CTF and poses) written with its contrast
    inverted, its stack then moved to another folder: ``(star, stacks folder)``.

    What a user with ASPIRE-simulated or cryoDRGN-uninverted data and moved stacks has; the
    command-line and napari tests of ``datadir`` and ``contrast_inverted`` open it.
    """
    from napari_cryohet.core.particle_dataset import ParticleDataset
    from napari_cryohet.io.write_particles import save_dataset
    from napari_cryohet.stages.simulate import RECIPES

    ds = RECIPES["adk_volumes"](n_particles=n_particles, n_conformations=1, box_size=32, apix=3.0, sigma_a=2.0,
                                snr=0.05, seed=seed)
    inverted = ParticleDataset(images=-ds.get_images(np.arange(len(ds))), apix=ds.apix, rotations=ds.rotations,
                               shifts_a=ds.shifts_a, ctf=ds.ctf)
    files = save_dataset(root / "analysis", inverted, name="particles")
    moved = root / "scratch"
    moved.mkdir()
    files["stack"].rename(moved / files["stack"].name)
    return files["star"], moved


@pytest.fixture(scope="session")
def write_inverted_files():
    """:func:`inverted_files` as a fixture (for module-scoped fixtures of other test files)."""
    return inverted_files
