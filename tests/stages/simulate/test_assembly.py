"""assembly_classes: classes differ by removed domains; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.stages.simulate import assembly as D
from napari_cryohet.stages.simulate.engine import measured_snr

# ------------------------------------------------------------------ assembly_classes


def test_assembly_classes_differ_by_removed_atoms():
    ds = D.assembly_classes(16, box_size=32, apix=3.0, sigma_a=3.0, seed=4)
    truth = ds.ground_truth
    masks, vols = truth["global/class_masks"], truth["global/volumes"]
    coords, weights = truth["global/reference_coords_a"], truth["global/atom_weights"]
    domains = truth["global/atom_domains"]
    assert masks.shape == (4, 1656) and masks[0].all()
    assert list(truth["global/class_names"]) == ["CORE+NMP+LID", "CORE+NMP", "CORE+LID", "CORE"]
    np.testing.assert_array_equal(~masks[1], domains == "LID")
    np.testing.assert_array_equal(~masks[2], domains == "NMP")
    np.testing.assert_array_equal(~masks[3], domains != "CORE")
    resids = D.load_adk_heavy()["resids"]
    assert set(np.unique(resids[domains == "LID"])) == set(range(122, 160))
    for k in range(1, 4):
        removed = ~masks[k]
        missing = gaussian_density_3d(torch.as_tensor(coords[removed]), d=32, apix=3.0, sigma_a=3.0,
                                      weights=torch.as_tensor(weights[removed])).numpy()
        np.testing.assert_allclose(vols[0] - vols[k], missing, atol=1e-4 * vols[0].max())
        assert (vols[0] - vols[k]).sum() == pytest.approx(weights[removed].sum(), rel=1e-3)
    assert set(np.unique(truth["state"])) <= {0, 1, 2, 3}
    # an image of a class-3 particle has less signal than a complete one, CTF aside
    assert measured_snr(ds) == pytest.approx(0.1, rel=0.05)


def test_assembly_classes_mix_composition_and_conformation():
    """frames × domain sets: each class's volume is its frame's atoms with its domains; the
    open and closed complete classes differ, the same domain set in one frame does not."""
    classes = (("CORE", "NMP", "LID"), ("CORE", "NMP"), ("CORE", "LID"))
    ds = D.assembly_classes(24, classes=classes, frames=(0, 101), box_size=32, apix=3.0, sigma_a=3.0, seed=2)
    truth = ds.ground_truth
    vols, masks = truth["global/volumes"], truth["global/class_masks"]
    assert vols.shape[0] == 6 and masks.shape[0] == 6
    assert list(truth["global/class_names"]) == ["frame 0: CORE+NMP+LID", "frame 0: CORE+NMP", "frame 0: CORE+LID",
                                                "frame 101: CORE+NMP+LID", "frame 101: CORE+NMP",
                                                "frame 101: CORE+LID"]
    np.testing.assert_array_equal(truth["global/class_frames"], [0, 0, 0, 101, 101, 101])
    np.testing.assert_array_equal(masks[:3], masks[3:])
    heavy = D.load_adk_heavy()
    for c, frame in enumerate(truth["global/class_frames"]):  # oracle: density of that frame's kept atoms
        keep = masks[c]
        expected = gaussian_density_3d(torch.as_tensor(heavy["coords"][frame][keep]), d=32, apix=3.0, sigma_a=3.0,
                                       weights=torch.as_tensor(heavy["weights"][keep])).numpy()
        np.testing.assert_allclose(vols[c], expected, atol=1e-4 * vols[c].max())
    # closed vs open: the complete maps differ by much more than the map noise floor
    assert np.abs(vols[0] - vols[3]).max() > 0.2 * vols[0].max()
    assert set(np.unique(truth["state"])) <= set(range(6))


def test_assembly_bad_input():
    with pytest.raises(ValueError, match="classes"):
        D.assembly_classes(4, classes=(("CORE", "FOO"),))
    with pytest.raises(ValueError, match="class_probabilities"):
        D.assembly_classes(4, class_probabilities=(1.0, 0.0))
    with pytest.raises(ValueError, match="frame"):
        D.assembly_classes(4, frames=(0, 500))
