"""The contrast check (core/contrast.py) and the contrast_inverted setting, end to end.

Issue 15's acceptance: an inverted-contrast synthetic set triggers the warning and, with the
setting, reconstructs with the right sign.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.contrast import Z_DECISIVE, check_contrast
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.reconstruct import reconstruct_volume
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.write_particles import save_dataset
from napari_cryohet.stages.simulate import RECIPES
from napari_cryohet.stages.workspace import Workspace


@pytest.fixture(scope="module")
def one_state():
    """300 particles of one AdK conformation, 32 px at 3 Å, SNR 0.05, with CTF and poses."""
    return RECIPES["adk_volumes"](n_particles=300, n_conformations=1, box_size=32, apix=3.0, sigma_a=2.0,
                                  snr=0.05, seed=3)


def _inverted_copy(ds: ParticleDataset) -> ParticleDataset:
    images = -ds.get_images(np.arange(len(ds)))
    return ParticleDataset(images=images, apix=ds.apix, rotations=ds.rotations, shifts_a=ds.shifts_a, ctf=ds.ctf,
                           ground_truth=ds.ground_truth)


def _correlation_with_truth(ds: ParticleDataset) -> float:
    vol = reconstruct_volume(ds.get_images(np.arange(len(ds))), ds.rotations, apix=ds.apix,
                             ctf=ds.ctf.to_torch(), shifts_a=np.array(ds.shifts_a)).numpy()
    truth = np.asarray(ds.ground_truth["global/volumes"])[0]
    return float(np.corrcoef(vol.ravel(), truth.ravel())[0, 1])


def test_check_decides_both_ways_and_not_on_noise(one_state, rng):
    right = check_contrast(one_state)
    wrong = check_contrast(_inverted_copy(one_state))
    print(f"t: as simulated {right.z:+.1f}, inverted {wrong.z:+.1f}")
    assert right.verdict == "expected" and wrong.verdict == "inverted"
    assert wrong.z == pytest.approx(-right.z, rel=1e-4)  # the statistic is odd in the images
    # pure noise with the same CTF: no decision, on 20 independent draws
    zs = []
    for _ in range(20):
        noise = ParticleDataset(images=rng.standard_normal((300, 32, 32)).astype(np.float32), apix=3.0,
                                ctf=one_state.ctf)
        zs.append(check_contrast(noise).z)
    print(f"noise: max |t| over 20 draws = {np.abs(zs).max():.2f}")
    assert np.abs(zs).max() < Z_DECISIVE
    assert 0.5 < np.std(zs) < 1.6  # a t-statistic: unit spread under the null


def test_inverted_files_warn_and_the_setting_reconstructs_the_right_sign(one_state, tmp_path):
    files = save_dataset(tmp_path / "data", _inverted_copy(one_state), name="inverted")
    # opened as they are: a workspace warns, with the evidence, and the map comes out negative
    ws = Workspace.create(tmp_path / "ws_plain", files["star"])
    with pytest.warns(UserWarning, match=r"look inverted: the CTF-weighted images of 300 particles are darker"):
        plain = ws.dataset
    assert plain.meta["contrast_check"].verdict == "inverted"
    r_plain = _correlation_with_truth(plain)
    # with the setting (stored in the workspace, applied where the images are read): no warning
    # (the suite turns warnings into errors) and the map correlates with the truth
    ws = Workspace.create(tmp_path / "ws_set", {"path": files["star"], "options": {"contrast_inverted": True}})
    assert Workspace.open(tmp_path / "ws_set").info["source"]["options"] == {"contrast_inverted": True}
    fixed = Workspace.open(tmp_path / "ws_set").dataset
    assert fixed.meta["contrast_check"].verdict == "expected"
    r_fixed = _correlation_with_truth(fixed)
    r_true = _correlation_with_truth(one_state)
    print(f"correlation with the true map: as read {r_plain:+.3f}, with contrast_inverted {r_fixed:+.3f}, "
          f"simulated {r_true:+.3f}")
    assert r_plain < -0.5 and r_fixed > 0.5
    assert r_fixed == pytest.approx(r_true, abs=1e-4)  # exactly the simulated images again


def test_the_setting_on_right_data_is_flagged(one_state, tmp_path):
    """contrast_inverted on data that were right: the check sees inverted images and the warning
    says to open them without the setting."""
    from napari_cryohet.core.contrast import warn_if_inverted

    files = save_dataset(tmp_path / "data", one_state, name="right")
    ds = load_dataset(files["star"], contrast_inverted=True)
    with pytest.warns(UserWarning, match="without it") as caught:
        check = warn_if_inverted(ds)
    assert check.verdict == "inverted" and check.z <= -Z_DECISIVE
    assert ds.meta["contrast_check"] is check
    assert len(caught) == 1
