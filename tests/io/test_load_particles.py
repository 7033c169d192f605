"""load_dataset: values, laziness, paths, pixel size, optional poses / CTF."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_cryohet.core.rotation import euler_to_matrix
from napari_cryohet.io.errors import CorruptFileError, MissingFileError, MissingStackError
from napari_cryohet.io.image_names import resolve_stack_path
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.mrc_stack import MultiFileStack, write_stack
from napari_cryohet.io.star import read_star
from napari_cryohet.io.write_particles import write_dataset_star


def _check_values(ds, case):
    np.testing.assert_allclose(ds.rotations, euler_to_matrix(np.deg2rad(case.euler_deg)), atol=1e-6)
    np.testing.assert_allclose(ds.shifts_a, case.shifts_a, atol=1e-5)
    np.testing.assert_allclose(ds.ctf.defocus_u_a, case.defocus_u)
    np.testing.assert_allclose(ds.ctf.defocus_v_a, case.defocus_v)
    np.testing.assert_allclose(ds.ctf.defocus_angle_rad, np.deg2rad(case.defocus_angle_deg))
    np.testing.assert_allclose(ds.ctf.phase_shift_rad, np.deg2rad(case.phase_shift_deg))
    np.testing.assert_allclose(ds.ctf.voltage_kv, case.voltage)
    np.testing.assert_allclose(ds.ctf.cs_mm, case.cs)
    np.testing.assert_allclose(ds.ctf.amplitude_contrast, case.q0)
    assert np.all(ds.ctf.bfactor_a2 == 0)
    assert ds.apix == pytest.approx(case.apix)


def test_relion31_values_and_images(star31):
    ds = load_dataset(star31.path, require=("images", "poses", "ctf"))
    assert isinstance(ds.images, MultiFileStack) and ds.images.shape == star31.images.shape
    assert ds.meta["star_format"] == "relion3.1"
    _check_values(ds, star31)
    np.testing.assert_array_equal(np.asarray(ds.images), star31.images)  # 1-based index@stack


def test_pre31_values_shifts_in_pixels(star30):
    ds = load_dataset(star30.path, require=("poses", "ctf"))
    assert ds.meta["star_format"] == "relion3.0"
    _check_values(ds, star30)  # apix from rlnDetectorPixelSize · 1e4 / rlnMagnification
    np.testing.assert_array_equal(ds.get_images([5, 2]), star30.images[[5, 2]])


def test_loading_touches_no_image_data(tmp_path, star_maker, monkeypatch):
    case = star_maker(tmp_path, n=30, n_stacks=3)
    opened = []
    real = mrcfile.mmap
    monkeypatch.setattr(mrcfile, "mmap", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    ds = load_dataset(case.path)
    assert opened == []  # headers only
    assert ds.images.n_open() == 0
    np.testing.assert_array_equal(ds.images[4], case.images[4])
    assert len(opened) == 1 and opened[0].endswith(case.stack_names[4 % 3])
    ds.images[[7, 4]]  # rows 7 and 4 both live in stack 1
    assert len(opened) == 1


def test_paths_are_relative_to_the_star_not_the_cwd(tmp_path, star_maker, monkeypatch):
    case = star_maker(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = load_dataset(case.path)
    np.testing.assert_array_equal(ds.images[1], case.images[1])


def test_project_relative_paths_found_in_parent_folder(tmp_path, star_maker):
    case = star_maker(tmp_path)
    job = tmp_path / "Select" / "job012"
    job.mkdir(parents=True)
    moved = job / "particles.star"
    moved.write_text(case.path.read_text())  # names stay 'Extract/...', relative to the project
    ds = load_dataset(moved)
    np.testing.assert_array_equal(ds.images[0], case.images[0])
    assert resolve_stack_path(job, case.stack_names[0]).samefile(tmp_path / case.stack_names[0])


def test_stacks_in_another_folder_load_with_datadir(tmp_path, star_maker, monkeypatch):
    """A .star in one folder, its stacks moved to another (cryoDRGN's --datadir): loads with
    ``datadir``, as ``datadir/<path in the file>`` or ``datadir/<file name>``; without it, the
    error says where it looked and names the option."""
    case = star_maker(tmp_path / "project")
    data = tmp_path / "scratch" / "stacks"
    data.mkdir(parents=True)
    for name in case.stack_names:  # the files only, without their Extract/ folder
        (tmp_path / "project" / name).rename(data / Path(name).name)
    star = tmp_path / "analysis" / "particles.star"
    star.parent.mkdir()
    star.write_text(case.path.read_text())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingStackError, match="datadir") as err:
        load_dataset(star)
    assert err.value.field == "rlnImageName"
    ds = load_dataset(star, datadir=data)
    np.testing.assert_array_equal(ds.get_images(np.arange(len(ds))), case.images)
    assert ds.meta["load_options"] == {"datadir": str(data)}
    # written back elsewhere, the subset's names point at the moved stacks and load without datadir
    out = write_dataset_star(tmp_path / "export" / "subset.star", ds.subset([3, 1]))
    np.testing.assert_array_equal(load_dataset(out).get_images([0, 1]), case.images[[3, 1]])
    # the datadir layout that keeps the file's sub-folders works too
    (data / "Extract").mkdir()
    for name in case.stack_names:
        (data / Path(name).name).rename(data / name)
    np.testing.assert_array_equal(load_dataset(star, datadir=data).get_images([0]), case.images[[0]])
    with pytest.raises(MissingFileError, match="datadir"):
        load_dataset(star, datadir=tmp_path / "nowhere")


def test_contrast_inverted_negates_every_read_once(tmp_path, star_maker, mrcs_writer):
    """contrast_inverted multiplies the images by −1 where they are read (star and bare stack),
    for every kind of index, and the subset and the written stack keep the corrected sign."""
    case = star_maker(tmp_path)
    ds = load_dataset(case.path, contrast_inverted=True)
    np.testing.assert_array_equal(ds.images[4], -case.images[4])
    np.testing.assert_array_equal(ds.images[[7, 2]], -case.images[[7, 2]])
    np.testing.assert_array_equal(ds.subset([5, 0]).get_images([0, 1]), -case.images[[5, 0]])
    assert ds.meta["contrast_inverted"] and ds.meta["load_options"] == {"contrast_inverted": True}
    out = write_dataset_star(tmp_path / "copy" / "copy.star", ds, stack_name="copy.mrcs")
    write_stack(out.parent / "copy.mrcs", ds.images, ds.apix)
    np.testing.assert_array_equal(load_dataset(out).images[4], -case.images[4])  # written corrected
    stack = mrcs_writer(tmp_path / "bare.mrcs", case.images, apix=2.0)
    assert np.array_equal(load_dataset(stack, contrast_inverted=True).images[3:5], -case.images[3:5])
    assert load_dataset(case.path).meta["load_options"] == {}


def test_pixel_size_from_header_and_argument(tmp_path, star_maker):
    case = star_maker(tmp_path, star_apix=False, header_apix=1.75)
    assert load_dataset(case.path).apix == pytest.approx(1.75)
    assert load_dataset(case.path, apix=3.0).apix == 3.0


def test_missing_poses_and_ctf_are_none_unless_required(tmp_path, star_maker):
    case = star_maker(tmp_path)
    table = read_star(case.path)
    text = case.path.read_text()
    # drop the pose columns by renaming them to unknown labels
    stripped = tmp_path / "noposes.star"
    stripped.write_text(text.replace("_rlnAngleRot", "_rlnUnusedA").replace("_rlnAngleTilt", "_rlnUnusedB"))
    ds = load_dataset(stripped)
    assert ds.rotations is None and ds.ctf is not None
    assert len(table.particles) == len(ds)


def test_premultiplied_ctf_is_refused_and_image_size_mismatch_warns(tmp_path, star_maker):
    """rlnCtfDataAreCtfPremultiplied = 1 (images multiplied by their CTF at extraction) is refused
    by name; an rlnImageSize that differs from the stacks' images warns, naming both sizes."""
    import starfile

    case = star_maker(tmp_path, n=6, d=16)
    blocks = starfile.read(case.path, always_dict=True)
    optics = blocks["optics"].copy()
    optics["rlnImageSize"] = 448
    starfile.write({"optics": optics, "particles": blocks["particles"]}, tmp_path / "size.star")
    with pytest.warns(UserWarning, match=r"size\.star: rlnImageSize says 448 px but the stacks' images are 16 px"):
        ds = load_dataset(tmp_path / "size.star")
    assert ds.box_size == 16 and len(ds) == 6
    optics["rlnImageSize"] = 16
    optics["rlnCtfDataAreCtfPremultiplied"] = [0, 1][: len(optics)] if len(optics) > 1 else 1
    starfile.write({"optics": optics, "particles": blocks["particles"]}, tmp_path / "premult.star")
    with pytest.raises(CorruptFileError, match="rlnCtfDataAreCtfPremultiplied") as err:
        load_dataset(tmp_path / "premult.star")
    assert "premult.star" in str(err.value)
