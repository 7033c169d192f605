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
    token = CancelToken()

    def kill_at_iteration_2(fraction, message):
        if message.startswith("iteration 2"):
            token.cancel()

    with pytest.raises(Cancelled):
        run_refine(ds, config, embedding=emb, run_dir=tmp_path / "killed", progress=kill_at_iteration_2, cancel=token)
    notes = []
    resumed = run_refine(ds, config, embedding=emb, run_dir=tmp_path / "killed",
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
