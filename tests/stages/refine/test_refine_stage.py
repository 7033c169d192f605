"""The refine stage: clusters recovered, labels stable, resume equals an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.protocol import Embedding
from napari_cryohet.stages.refine.config import RefineConfig
from napari_cryohet.stages.refine.result import RefineResult
from napari_cryohet.stages.refine.run import run_refine
from napari_cryohet.stages.simulate import assembly_classes


@pytest.fixture(scope="module")
def two_classes():
    """120 particles of two AdK assembly classes (complete, CORE only), 32 px, SNR 1, with
    per-particle vectors that separate the classes with noise (a stand-in for VAE latents)."""
    ds = assembly_classes(120, classes=(("CORE", "NMP", "LID"), ("CORE",)), box_size=32, apix=3.0, sigma_a=3.0,
                          snr=1.0, seed=3)
    truth = np.asarray(ds.ground_truth["state"])
    rng = np.random.default_rng(0)
    vectors = np.eye(2)[truth] * 3.0 + rng.normal(scale=0.5, size=(len(truth), 2))
    return ds, truth, Embedding.for_dataset(vectors, ds, name="latents")


def _killed_then_resumed(ds, config, emb, run_dir, *, at_iteration: int, progress=None):
    """Run until iteration ``at_iteration`` starts, cancel there, then run again in the same folder."""
    token = CancelToken()

    def kill(fraction, message):
        if message.startswith(f"iteration {at_iteration}"):
            token.cancel()

    with pytest.raises(Cancelled):
        run_refine(ds, config, embedding=emb, run_dir=run_dir, progress=kill, cancel=token)
    return run_refine(ds, config, embedding=emb, run_dir=run_dir, progress=progress)


def test_clusters_match_truth_and_stay_stable(two_classes):
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=2, refine_poses=False, min_cluster_size=10,
                          device="cpu")
    result = run_refine(ds, config, embedding=emb)
    assert result.labels.shape == (2, len(ds))
    assert adjusted_rand_score(truth, result.final_labels) > 0.95
    assert result.history[1]["label_stability"] == pytest.approx(1.0)  # ids kept across iterations
    np.testing.assert_array_equal(result.labels[0], result.labels[1])
    assert sorted(result.cluster_ids) == [0, 1] and result.maps.shape == (2, 32, 32, 32)
    for rec in result.history:  # every class map is resolved (finite 0.143 resolution, ≥ Nyquist)
        for k in ("0", "1"):
            assert 2 * 3.0 <= rec["clusters"][k]["resolution_a"] < 60.0
    # the complete class has more density than the CORE-only class, seen in their maps
    complete = int(np.bincount(result.final_labels[truth == 0]).argmax())
    other = 1 - complete
    assert result.maps[complete].sum() > result.maps[other].sum()
    half = result.half_sets
    assert set(np.unique(half)) == {1, 2} and abs((half == 1).sum() - (half == 2).sum()) <= 1


def test_resume_after_a_kill_equals_an_uninterrupted_run(two_classes, tmp_path):
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=3, refine_poses=False, min_cluster_size=10,
                          device="cpu", warm_start=False)
    whole = run_refine(ds, config, embedding=emb, run_dir=tmp_path / "whole")
    notes = []
    resumed = _killed_then_resumed(ds, config, emb, tmp_path / "killed", at_iteration=2,
                                   progress=lambda f, m: notes.append(m))
    assert any(m.startswith("resumed from epoch 1") for m in notes)
    np.testing.assert_array_equal(resumed.labels, whole.labels)
    np.testing.assert_allclose(resumed.rotations, whole.rotations)
    np.testing.assert_allclose(resumed.maps, whole.maps, atol=1e-6)
    assert [h["iteration"] for h in resumed.history] == [1, 2, 3]


def test_result_saves_and_loads(two_classes, tmp_path):
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="pca", n_components=2, n_clusters=2, n_iterations=1, refine_poses=False,
                          min_cluster_size=10, device="cpu")
    result = run_refine(ds, config, embedding=emb)
    result.save(tmp_path)
    back = RefineResult.load(tmp_path)
    np.testing.assert_array_equal(back.labels, result.labels)
    np.testing.assert_allclose(back.maps, result.maps)
    assert back.config == config and back.history == result.history
    np.testing.assert_array_equal(back.embedding().aligned_to(ds)[:, 0], result.final_labels)


def test_pose_refinement_reduces_a_known_pose_error():
    """Poses perturbed by 3° and 1 px: one iteration of the loop brings them closer to the
    truth (on high-SNR data, half maps from the perturbed poses)."""
    import torch

    from napari_cryohet.core.local_refine import axis_angle_to_matrix, geodesic_angle_deg

    ds = assembly_classes(80, classes=(("CORE", "NMP", "LID"),), box_size=32, apix=3.0, sigma_a=3.0, snr=20.0,
                          seed=5)
    true_rot = torch.as_tensor(np.asarray(ds.rotations), dtype=torch.float64)
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(len(ds), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    delta = axis_angle_to_matrix(torch.as_tensor(axes * np.deg2rad(3.0)))
    ds.rotations = (delta @ true_rot).numpy()
    before = geodesic_angle_deg(torch.as_tensor(ds.rotations), true_rot)
    config = RefineConfig(embedding_method="none", n_clusters=1, n_iterations=1, sigma_angle_deg=2.0, sigma_shift_a=0.5,
                          resolution_schedule_a=(7.0,), min_cluster_size=10, device="cpu")
    result = run_refine(ds, config, embedding=Embedding.for_dataset(np.zeros((len(ds), 1)), ds))
    after = geodesic_angle_deg(torch.as_tensor(result.rotations), true_rot)
    assert float(before.mean()) == pytest.approx(3.0, abs=1e-3)
    assert float(after.mean()) < 0.8 * float(before.mean())  # 3.0° → 2.0° in one iteration
    assert result.history[0]["clusters"]["0"]["mean_angle_change_deg"] > 0.5


def test_cluster_export_keeps_every_column_with_refined_poses(tmp_path):
    """A cluster of the bundled .star written back: exactly its particles, every original
    column, the refined poses, rlnClassNumber = id + 1 and the run's half sets."""
    from pathlib import Path

    import starfile

    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.stages.refine.export import export_cluster_star

    star = Path(__file__).resolve().parents[3] / "sample_data" / "adk_small" / "particles.star"
    ds = load_dataset(star)
    truth = np.asarray(ds.ground_truth["state"])
    emb = Embedding.for_dataset((truth > truth.mean()).astype(float)[:, None] + 0.01 * np.arange(len(ds))[:, None]
                                / len(ds), ds)
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=1, refine_poses=False,
                          min_cluster_size=10, device="cpu")
    result = run_refine(ds, config, embedding=emb)
    result.rotations = result.rotations[:, :, [1, 0, 2]] * np.array([1.0, 1.0, -1.0])  # a different proper rotation
    result.shifts_a = result.shifts_a + 0.75
    out = export_cluster_star(tmp_path / "cluster1.star", ds, result, 1)
    original = starfile.read(star, always_dict=True)["particles"]
    written = starfile.read(out, always_dict=True)["particles"]
    members = np.flatnonzero(result.final_labels == 1)
    assert len(written) == len(members)
    assert set(original.columns) <= set(written.columns)
    assert (written["rlnClassNumber"] == 2).all()
    np.testing.assert_array_equal(written["rlnRandomSubset"].to_numpy(), result.half_sets[members])
    # the same images (the stack's path is rewritten relative to the new file's folder)
    index = [str(v).split("@")[0] for v in written["rlnImageName"]]
    np.testing.assert_array_equal(index, [str(v).split("@")[0] for v in original["rlnImageName"].to_numpy()[members]])
    np.testing.assert_allclose(written["rlnDefocusU"].to_numpy(float), original["rlnDefocusU"].to_numpy(float)[members])
    back = load_dataset(out)
    np.testing.assert_allclose(back.rotations, result.rotations[members], atol=1e-4)
    np.testing.assert_allclose(back.shifts_a, result.shifts_a[members], atol=1e-4)


def test_every_iteration_keeps_its_poses_maps_and_curves(two_classes, tmp_path):
    """Per iteration: the poses after it, its class maps and FSC curves; saved and loaded back."""
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=2, sigma_angle_deg=1.0,
                          sigma_shift_a=1.0, resolution_schedule_a=(9.0,), grid_steps=1, refine_steps=2,
                          min_cluster_size=10, device="cpu")
    result = run_refine(ds, config, embedding=emb)
    assert len(result.iterations) == 2
    last = result.iterations[-1]
    np.testing.assert_allclose(last["rotations"], result.rotations, atol=1e-6)  # float32 copy of the final poses
    np.testing.assert_allclose(last["shifts_a"], result.shifts_a, atol=1e-4)
    first = result.iterations[0]
    assert not np.allclose(first["rotations"], np.asarray(ds.rotations), atol=1e-6)  # iteration 1 moved poses
    for it in result.iterations:
        assert it["maps"].shape == (len(it["cluster_ids"]), 32, 32, 32)
        assert it["fsc"].shape == (len(it["cluster_ids"]), 17)
        assert np.all(it["fsc"][:, 1] > 0.5)  # low frequencies of a resolved map correlate
    assert [h["resolution_limit_a"] for h in result.history] == [9.0, 9.0]
    result.save(tmp_path)
    back = RefineResult.load(tmp_path)
    assert len(back.iterations) == 2
    for a, b in zip(back.iterations, result.iterations, strict=True):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_gmm_memberships_weight_the_class_maps(two_classes):
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="none", cluster_method="gmm", n_clusters=2, n_iterations=1,
                          refine_poses=False, min_cluster_size=10, device="cpu")
    result = run_refine(ds, config, embedding=emb)
    assert adjusted_rand_score(truth, result.final_labels) > 0.95
    assert all(c["weighted"] for c in result.history[0]["clusters"].values())
    off = run_refine(ds, RefineConfig(**{**config.to_dict(), "soft_weights": False}), embedding=emb)
    assert not any(c["weighted"] for c in off.history[0]["clusters"].values())


class _FakeVAE:
    """A stand-in VAE result: decode(z) makes the complete or the CORE-only AdK class map."""

    def __init__(self, volumes):
        self.volumes = np.asarray(volumes, dtype=np.float32)

    def decode(self, z, batch=8):
        z = np.asarray(z)
        return self.volumes[(z[:, 1] > z[:, 0]).astype(int)]


def test_landscape_clustering_uses_the_input_runs_decoder(two_classes):
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="umap", cluster_method="landscape", n_clusters=2, n_iterations=1,
                          refine_poses=False, min_cluster_size=10, device="cpu")
    with pytest.raises(ValueError, match="no decoder"):
        run_refine(ds, config, embedding=emb)
    with_decoder = Embedding(emb.values, emb.indices, name="latents",
                             source=_FakeVAE(ds.ground_truth["global/volumes"]))
    result = run_refine(ds, config, embedding=with_decoder)
    assert adjusted_rand_score(truth, result.final_labels) > 0.95
    assert result.history[0]["cluster_method"] == "landscape"


def test_vae_epochs_need_a_vae_run(two_classes):
    ds, truth, emb = two_classes
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=1, vae_epochs=1, device="cpu")
    with pytest.raises(ValueError, match="not a VAE run"):
        run_refine(ds, config, embedding=emb)


def test_vae_epochs_retrain_the_input_vae_and_resume(two_classes, tmp_path):
    """§4.1.6: after each iteration the input VAE trains on the refined poses and its new latents are
    clustered; a killed run resumes with the re-trained weights and ends as an uninterrupted one."""
    from napari_cryohet.stages.vae import VAEConfig, train_vae

    ds, truth, _ = two_classes
    vae = train_vae(ds, VAEConfig(epochs=2, zdim=2, batch_size=40, seed=0, device="cpu"))
    emb = vae.embedding()
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=2, vae_epochs=1, sigma_angle_deg=1.0,
                          sigma_shift_a=1.0, grid_steps=1, refine_steps=2, min_cluster_size=10, device="cpu")
    whole = run_refine(ds, config, embedding=emb, run_dir=tmp_path / "whole")
    for rec in whole.history:
        assert rec["vae"]["epochs"] == 1 and np.isfinite(rec["vae"]["loss"])
        assert rec["vae"]["latent_change"] > 0  # the latents moved with the re-training
    resumed = _killed_then_resumed(ds, config, emb, tmp_path / "killed", at_iteration=2)
    np.testing.assert_array_equal(resumed.labels, whole.labels)
    np.testing.assert_allclose(resumed.rotations, whole.rotations, atol=1e-9)
    assert resumed.history[1]["vae"]["latent_change"] == pytest.approx(whole.history[1]["vae"]["latent_change"])


def test_assignment_to_class_maps_repairs_a_poor_clustering(two_classes, tmp_path):
    """Vectors that barely separate the classes cluster them poorly; from the second iteration on,
    assigning each particle to the class map its image matches best (RELION-style classification)
    recovers the classes. A killed run resumes with the pending assignment."""
    ds, truth, _ = two_classes
    rng = np.random.default_rng(2)
    vectors = np.eye(2)[truth] * 1.0 + rng.normal(scale=0.6, size=(len(truth), 2))
    emb = Embedding.for_dataset(vectors, ds, name="latents")
    config = RefineConfig(embedding_method="none", n_clusters=2, n_iterations=3, assignment="maps",
                          refine_poses=False, min_cluster_size=10, resolution_schedule_a=(12.0,), device="cpu")
    result = run_refine(ds, config, embedding=emb, run_dir=tmp_path / "whole")
    first, last = (adjusted_rand_score(truth, lab) for lab in (result.labels[0], result.labels[-1]))
    print(f"ARI: clustered vectors {first:.3f} → assigned to the class maps {last:.3f}")
    assert first < 0.7 and last > 0.95
    assert result.history[1]["cluster_method"] == "maps" and result.history[0]["reassigned_fraction"] > 0.05
    resumed = _killed_then_resumed(ds, config, emb, tmp_path / "killed", at_iteration=3)
    np.testing.assert_array_equal(resumed.labels, result.labels)

