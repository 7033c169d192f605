"""Chain fit on the stage protocol (issue 11): workspace runs, strict checkpoints, eigenvectors by particle index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.io.errors import CorruptFileError
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.chainfit import ChainFitConfig, ChainFitResult, run_chainfit
from napari_cryohet.stages.checkpoint import CheckpointMismatchError
from napari_cryohet.stages.protocol import Embedding, ParticleMismatchError
from napari_cryohet.stages.simulate import adk_chain
from napari_cryohet.stages.workspace import Workspace

#: Small and quick: 3 eigenvectors, 16² Fourier components of 32-px images.
TINY = dict(n_eigenvectors=3, epochs=2, batch_size=20, fit_box_size=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    """60 AdK particles (32 px, SNR 1) and an exact-enough basis: constant, true state, noise."""
    ds = adk_chain(60, box_size=32, apix=4.0, snr=1.0, seed=3)
    rng = np.random.default_rng(0)
    basis = np.column_stack([np.ones(len(ds)), ds.ground_truth["state_params"][:, :1], rng.normal(size=len(ds))])
    return ds, basis


def test_config_round_trip_and_fingerprint():
    cfg = ChainFitConfig(rigid_angles=[3, 4], varying_angles=[1, 2, 3], reference=" ", device="cpu")
    assert cfg.rigid_angles == (3, 4) and cfg.reference is None
    back = ChainFitConfig.from_dict(cfg.to_dict())
    assert back == cfg and back.fingerprint() == cfg.fingerprint()
    assert ChainFitConfig(device="cuda", checkpoint_every=5).fingerprint() == ChainFitConfig().fingerprint()
    assert ChainFitConfig(learning_rate=0.5).fingerprint() != ChainFitConfig().fingerprint()
    with pytest.raises(ValueError, match=r"ChainFitConfig.learning_rate: expected a positive number"):
        ChainFitConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"ChainFitConfig.test_fraction"):
        ChainFitConfig(test_fraction=1.0)


def test_shuffled_subset_embedding_gives_the_positional_fit(tiny):
    """(d) eigenvectors are matched by particle index: a shuffled embedding of a superset of
    the particles gives the fit of the rows in order."""
    ds, basis = tiny
    rows = np.arange(5, 55)
    sub = ds.subset(rows)
    cfg = ChainFitConfig(**TINY)
    positional = run_chainfit(sub, cfg, eigenvectors=Embedding.for_dataset(basis[rows], sub))
    perm = np.random.default_rng(1).permutation(len(ds))
    shuffled = Embedding(basis[perm], ds.indices[perm], name="eigenvectors")
    fit = run_chainfit(sub, cfg, eigenvectors=shuffled)
    np.testing.assert_allclose(fit.coeff_theta, positional.coeff_theta, atol=1e-6)
    np.testing.assert_allclose(fit.coeff_psi, positional.coeff_psi, atol=1e-6)
    np.testing.assert_array_equal(fit.particle_indices, ds.indices[rows])
    assert np.abs(positional.coeff_theta).max() > 1e-4  # it did fit something
    # rows of the result are found by particle index, and missing particles are named
    np.testing.assert_array_equal(fit.rows(ds.indices[[7, 5]]), [2, 0])
    with pytest.raises(ParticleMismatchError, match="chain fit has no values for 1 of the 2"):
        fit.rows(ds.indices[[0, 5]])
    with pytest.raises(ParticleMismatchError, match="eigenvectors has no values for 10 of the 60"):
        run_chainfit(ds, cfg, eigenvectors=Embedding(basis[rows], ds.indices[rows], name="eigenvectors"))


def test_resume_on_other_particles_is_refused_and_keeps_the_checkpoint(tiny, tmp_path):
    """(b) a 2-epoch checkpoint on 60 particles, resumed with 50: refused, file untouched."""
    ds, basis = tiny
    emb = Embedding.for_dataset(basis, ds, name="eigenvectors")
    run_chainfit(ds, ChainFitConfig(**TINY), eigenvectors=emb, run_dir=tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    before = checkpoint.read_bytes()
    with pytest.raises(CheckpointMismatchError, match=r"particle count differs \(60 → 50\)"):
        run_chainfit(ds.subset(np.arange(50)), ChainFitConfig(**TINY), eigenvectors=emb, run_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"settings differ \(epochs: 2 → 8\)"):
        run_chainfit(ds, ChainFitConfig(**{**TINY, "epochs": 8}), eigenvectors=emb, run_dir=tmp_path)
    other = Embedding.for_dataset(basis[:, [0, 2, 1]], ds, name="eigenvectors")
    with pytest.raises(CheckpointMismatchError, match="other eigenvectors or another reference"):
        run_chainfit(ds, ChainFitConfig(**TINY), eigenvectors=other, run_dir=tmp_path)
    assert checkpoint.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]


def test_truncated_checkpoint_is_a_corrupt_file_error(tiny, tmp_path):
    """(c) a truncated checkpoint is a named error, not a raw OSError."""
    ds, basis = tiny
    emb = Embedding.for_dataset(basis, ds, name="eigenvectors")
    cfg = ChainFitConfig(**{**TINY, "epochs": 1})
    run_chainfit(ds, cfg, eigenvectors=emb, run_dir=tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match="checkpoint.pt"):
        run_chainfit(ds, cfg, eigenvectors=emb, run_dir=tmp_path)


def test_finished_checkpoint_resumes_to_the_same_result(tiny, tmp_path):
    ds, basis = tiny
    emb = Embedding.for_dataset(basis, ds, name="eigenvectors")
    cfg = ChainFitConfig(**TINY)
    first = run_chainfit(ds, cfg, eigenvectors=emb, run_dir=tmp_path)
    first.save(tmp_path)
    again = run_chainfit(ds, cfg, eigenvectors=emb, run_dir=tmp_path)  # nothing left to train
    np.testing.assert_array_equal(again.coeff_theta, first.coeff_theta)
    assert again.history == first.history
    loaded = ChainFitResult.load(tmp_path)
    np.testing.assert_array_equal(loaded.coeff_theta, first.coeff_theta)
    assert loaded.config == cfg.to_dict()


def test_embedding_is_the_per_particle_angle_change(tiny):
    ds, basis = tiny
    result = run_chainfit(ds, ChainFitConfig(**{**TINY, "epochs": 1, "rigid_angles": (0, 1)}),
                          eigenvectors=Embedding.for_dataset(basis, ds))
    emb = result.embedding()
    m2 = result.theta0.shape[0]
    assert emb.values.shape == (len(ds), 2 * m2) and emb.name == "chain-fit angle changes"
    theta, psi = result.angles()
    np.testing.assert_allclose(emb.aligned_to(ds)[:, :m2], theta - result.theta0, atol=1e-12)
    np.testing.assert_allclose(emb.values[:, m2:], psi - result.psi0, atol=1e-12)


# ----------------------------------------------------------------------------- workspace runs


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory):
    """A workspace on the bundled AdK sample (200 particles, 64 px) with a default spectral run."""
    root = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
    ws = Workspace.create(tmp_path_factory.mktemp("ws"), root)
    assert ws.run("spectral").run_id == "spectral/0001"
    return ws


def test_workspace_rerun_with_other_settings_makes_a_new_run(sample_ws):
    """(a) a second ``ws.run`` with learning_rate=0.5, anchor='truth' is a new run with its
    own coefficients, not the first run's."""
    ws = sample_ws
    inputs = {"eigenvectors": "spectral/0001"}
    cfg = ChainFitConfig(n_eigenvectors=3, epochs=1, batch_size=100, fit_box_size=16)
    first = ws.run("chainfit", cfg, inputs=inputs)
    second = ws.run("chainfit", dataclasses.replace(cfg, learning_rate=0.5, anchor="truth"), inputs=inputs)
    assert (first.run_id, second.run_id) == ("chainfit/0001", "chainfit/0002")
    assert np.abs(first.coeff_theta - second.coeff_theta).max() > 1e-3
    assert ws.manifest("chainfit/0002")["config"]["learning_rate"] == 0.5
    assert ws.manifest("chainfit/0002")["inputs"] == inputs
    loaded = ws.result("chainfit/0002")
    np.testing.assert_array_equal(loaded.coeff_theta, second.coeff_theta)
    np.testing.assert_array_equal(loaded.particle_indices, ws.dataset.indices)
    messages = []
    again = ws.run("chainfit", cfg, inputs=inputs, progress=lambda f, m: messages.append(m))
    assert again.run_id == "chainfit/0001" and "already done" in messages[-1]
    np.testing.assert_array_equal(again.coeff_theta, first.coeff_theta)


def test_workspace_resumes_a_cancelled_run(sample_ws):
    ws = sample_ws
    inputs = {"eigenvectors": "spectral/0001"}
    cfg = ChainFitConfig(n_eigenvectors=3, epochs=2, batch_size=100, fit_box_size=16, seed=7)
    token = CancelToken()

    def progress(fraction, message):
        if message.startswith("epoch 2/2  batch 1/"):
            token.cancel()

    with pytest.raises(Cancelled):
        ws.run("chainfit", cfg, inputs=inputs, progress=progress, cancel=token)
    run_id = [m for m in ws.runs("chainfit") if m["status"] == "cancelled"][-1]["run_id"]
    messages = []
    resumed = ws.run("chainfit", cfg, inputs=inputs, progress=lambda f, m: messages.append(m))
    assert resumed.run_id == run_id
    assert f"resumed from epoch 1 of run {run_id}" in messages
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert ws.manifest(run_id)["status"] == "done"


def test_default_spectral_settings_fit_real_and_simulated_data():
    from napari_cryohet.core.particle_dataset import ParticleDataset
    from napari_cryohet.stages.chainfit.stage import default_spectral_config
    from napari_cryohet.stages.simulate import adk_chain

    real = ParticleDataset(images=np.zeros((6, 8, 8), np.float32), apix=2.0)  # no ground truth
    assert default_spectral_config(3, real).representation == "pca_images"
    simulated = adk_chain(n_particles=4, box_size=16, apix=6.0)
    cfg = default_spectral_config(30, simulated)
    assert cfg.representation == "lowres_volumes" and cfg.n_eigenvectors == 30
