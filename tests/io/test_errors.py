"""Every bad input of issue 2 item 6 raises a named error naming the file and the field."""

from __future__ import annotations

import os
import pickle
import shutil

import mrcfile
import numpy as np
import pytest

from napari_cryohet.core.rotation import euler_to_matrix
from napari_cryohet.io.cryodrgn import read_ctf_pkl, read_poses_pkl, write_ctf_pkl, write_poses_pkl
from napari_cryohet.io.errors import (
    CorruptFileError,
    CountMismatchError,
    CryohetInputError,
    EmptyFileError,
    ImageShapeError,
    MissingColumnError,
    MissingFileError,
    MissingStackError,
    NonFiniteImageError,
    PixelSizeError,
    StackIndexError,
)
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.mrc_stack import open_stack
from napari_cryohet.io.star import read_star


def assert_names(exc_info, path, field=None, *words):
    """The message names the file (and the field, and any given words)."""
    err = exc_info.value
    assert isinstance(err, CryohetInputError) and isinstance(err, ValueError)
    msg = str(err)
    assert str(path) in msg, msg
    if field is not None:
        assert err.field == field and f"[{field}]" in msg, msg
    for w in words:
        assert w in msg, msg


# ------------------------------------------------------------------- MRC files


def test_truncated_mrc(tmp_path, mrcs_writer):
    path = mrcs_writer(tmp_path / "t.mrcs", np.zeros((10, 8, 8), np.float32))
    os.truncate(path, 1024 + 8 * 8 * 4 * 6)
    with pytest.raises(CorruptFileError) as e:
        open_stack(path)
    assert_names(e, path, "nz", "truncated", "10 image(s)")


def test_corrupt_mrc_header(tmp_path):
    path = tmp_path / "junk.mrcs"
    path.write_bytes(b"not an mrc file" * 10)
    with pytest.raises(CorruptFileError) as e:
        open_stack(path)
    assert_names(e, path, "header")


def test_missing_mrc(tmp_path):
    with pytest.raises(MissingFileError) as e:
        open_stack(tmp_path / "nope.mrcs")
    assert_names(e, tmp_path / "nope.mrcs")


def test_non_square_images(tmp_path, mrcs_writer):
    path = mrcs_writer(tmp_path / "rect.mrcs", np.zeros((2, 8, 10), np.float32))
    with pytest.raises(ImageShapeError) as e:
        open_stack(path)
    assert_names(e, path, "nx/ny", "square")


def test_odd_sized_images(tmp_path, mrcs_writer):
    path = mrcs_writer(tmp_path / "odd.mrcs", np.zeros((2, 9, 9), np.float32))
    with pytest.raises(ImageShapeError) as e:
        open_stack(path)
    assert_names(e, path, "nx", "even")


def test_nan_and_inf_reported_when_read(tmp_path, mrcs_writer):
    data = np.zeros((6, 8, 8), np.float32)
    data[4, 2, 3] = np.nan
    data[5, 0, 0] = np.inf
    path = mrcs_writer(tmp_path / "nan.mrcs", data, 1.0)
    s = open_stack(path)  # opening does not scan
    np.testing.assert_array_equal(s[:4], 0)
    with pytest.raises(NonFiniteImageError) as e:
        s[4]
    assert_names(e, path, "data", "image 5")
    with pytest.raises(NonFiniteImageError) as e:
        s[[0, 5]]
    assert_names(e, path, "data", "image 6")
    with pytest.raises(NonFiniteImageError) as e:
        load_dataset(path, validate=True)
    assert_names(e, path, "data", "image 5")


def test_nan_through_a_star_names_the_stack(tmp_path, star_maker):
    case = star_maker(tmp_path, n=6, n_stacks=1)
    stack = tmp_path / case.stack_names[0]
    with mrcfile.open(stack, mode="r+") as m:
        m.data[1, 1, 1] = np.nan  # 0-based image 1 = row 6 of the star (descending indices)
    ds = load_dataset(case.path)
    with pytest.raises(NonFiniteImageError) as e:
        ds.images[5]
    assert_names(e, stack, "data", "image 2", str(case.path))
    with pytest.raises(NonFiniteImageError):
        load_dataset(case.path, validate=True)


# ------------------------------------------------------------------- star files


def test_star_row_past_end_of_stack(tmp_path, star_maker):
    case = star_maker(tmp_path, n=6, n_stacks=1)  # stack holds 7 images; row 1 is image 7
    text = case.path.read_text().replace("000007@Extract/mic000.mrcs", "000099@Extract/mic000.mrcs", 1)
    case.path.write_text(text)
    with pytest.raises(StackIndexError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "rlnImageName", "row 1", "image 99", "mic000.mrcs", "holds 7 images")


def test_star_row_index_zero(tmp_path, star_maker):
    case = star_maker(tmp_path, n=6, n_stacks=1)
    case.path.write_text(case.path.read_text().replace("000007@", "000000@", 1))
    with pytest.raises(StackIndexError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "rlnImageName", "1-based")


def test_star_missing_stack(tmp_path, star_maker):
    case = star_maker(tmp_path, n=6, n_stacks=2)
    (tmp_path / case.stack_names[1]).unlink()
    with pytest.raises(MissingStackError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "rlnImageName", case.stack_names[1], "does not exist")


def test_star_stack_truncated_is_caught_at_load(tmp_path, star_maker):
    case = star_maker(tmp_path, n=6, n_stacks=1)
    stack = tmp_path / case.stack_names[0]
    os.truncate(stack, 2000)
    with pytest.raises(CorruptFileError) as e:
        load_dataset(case.path)
    assert_names(e, stack, "nz", "truncated")


def test_star_stacks_of_different_sizes(tmp_path, star_maker, mrcs_writer):
    case = star_maker(tmp_path, n=6, n_stacks=2, d=16)
    mrcs_writer(tmp_path / case.stack_names[1], np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ImageShapeError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "rlnImageName", "different image sizes")


@pytest.mark.parametrize(
    ("renamed", "require", "field"),
    [
        ("_rlnAngleTilt", ("poses",), "rlnAngleTilt"),
        ("_rlnDefocusU", ("ctf",), "rlnDefocusU"),
        ("_rlnImageName", ("images",), "rlnImageName"),
    ],
)
def test_missing_required_columns(tmp_path, star_maker, renamed, require, field):
    case = star_maker(tmp_path)
    case.path.write_text(case.path.read_text().replace(renamed, "_rlnSomethingElse"))
    with pytest.raises(MissingColumnError) as e:
        load_dataset(case.path, require=require)
    assert_names(e, case.path, field)


def test_ctf_voltage_missing_from_optics_and_particles(tmp_path, star_maker):
    case = star_maker(tmp_path)
    case.path.write_text(case.path.read_text().replace("_rlnVoltage", "_rlnOtherLabel"))
    assert load_dataset(case.path).ctf is None  # not required: loads, CTF absent
    with pytest.raises(MissingColumnError) as e:
        load_dataset(case.path, require=("ctf",))
    assert_names(e, case.path, "rlnVoltage", "data_optics")


def test_bare_stack_cannot_satisfy_required_poses(tmp_path, mrcs_writer):
    path = mrcs_writer(tmp_path / "s.mrcs", np.zeros((2, 8, 8), np.float32), 1.0)
    with pytest.raises(MissingColumnError) as e:
        load_dataset(path, require=("poses",))
    assert_names(e, path, "poses")


def test_non_numeric_pose_value(tmp_path, star_maker):
    case = star_maker(tmp_path, n=4, n_stacks=1)
    lines = case.path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if "@Extract" in line)
    fields = lines[row].split()
    fields[5] = "banana"  # rlnAngleTilt of row 1
    lines[row] = " ".join(fields)
    case.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptFileError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "rlnAngleTilt", "row 1", "banana")


def test_pixel_size_absent_everywhere(tmp_path, star_maker, mrcs_writer):
    case = star_maker(tmp_path, star_apix=False, header_apix=None)
    with pytest.raises(PixelSizeError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "apix", "no pixel size")
    bare = mrcs_writer(tmp_path / "bare.mrcs", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(PixelSizeError) as e:
        load_dataset(bare)
    assert_names(e, bare, "apix")
    assert load_dataset(bare, apix=1.3).apix == 1.3


def test_pixel_size_differs_between_optics_groups(tmp_path, star_maker):
    case = star_maker(tmp_path)
    text = case.path.read_text().replace("2.500000  16  2", "2.600000  16  2", 1)
    case.path.write_text(text)
    with pytest.raises(PixelSizeError) as e:
        load_dataset(case.path)
    assert_names(e, case.path, "rlnImagePixelSize", "differs")


def test_empty_star_files(tmp_path):
    empty = tmp_path / "empty.star"
    empty.write_text("")
    with pytest.raises(EmptyFileError) as e:
        load_dataset(empty)
    assert_names(e, empty)
    no_rows = tmp_path / "norows.star"
    no_rows.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n\n")
    with pytest.raises(EmptyFileError) as e:
        read_star(no_rows)
    assert_names(e, no_rows, "data_particles", "no rows")
    comments = tmp_path / "comments.star"
    comments.write_text("# nothing here\n\n")
    with pytest.raises(EmptyFileError) as e:
        load_dataset(comments)
    assert_names(e, comments)


def test_missing_star_file(tmp_path):
    with pytest.raises(MissingFileError) as e:
        load_dataset(tmp_path / "absent.star")
    assert_names(e, tmp_path / "absent.star")


# ------------------------------------------------------------------- cryoDRGN pickles


def test_pickle_counts_must_match_the_stack(tmp_path, mrcs_writer):
    stack = mrcs_writer(tmp_path / "s.mrcs", np.zeros((5, 8, 8), np.float32), 1.0)
    rot = euler_to_matrix(np.zeros((4, 3)))
    write_poses_pkl(tmp_path / "p.pkl", rot, np.zeros((4, 2)), box_size=8, apix=1.0)
    with pytest.raises(CountMismatchError) as e:
        load_dataset(stack, poses=tmp_path / "p.pkl")
    assert_names(e, tmp_path / "p.pkl", "N", "4 particles", "5 images", str(stack))
    from napari_cryohet.core.particle_dataset import CTFParams

    write_ctf_pkl(tmp_path / "c.pkl", CTFParams.constant(6, defocus_u_a=1e4), box_size=8, apix=1.0)
    with pytest.raises(CountMismatchError) as e:
        load_dataset(stack, ctf=tmp_path / "c.pkl")
    assert_names(e, tmp_path / "c.pkl", "N", "6 particles")


def test_ctf_pickle_of_the_full_size_rescales_the_pixel_size(tmp_path, mrcs_writer):
    """A CTF pickle parsed at the extraction size (16 px, 1 Å/px) with a stack downsampled to 8 px:
    the pixel size becomes 2 Å/px (as cryoDRGN reads such a pair), with a warning naming both."""
    from napari_cryohet.core.particle_dataset import CTFParams

    stack = mrcs_writer(tmp_path / "s.mrcs", np.zeros((3, 8, 8), np.float32), 0.0)
    write_ctf_pkl(tmp_path / "c.pkl", CTFParams.constant(3, defocus_u_a=1e4), box_size=16, apix=1.0)
    with pytest.warns(UserWarning, match=r"c\.pkl: made for 16-px images at 1 Å/px, the images are 8 px.*2 Å/px"):
        ds = load_dataset(stack, ctf=tmp_path / "c.pkl")
    assert ds.apix == pytest.approx(2.0) and ds.box_size == 8
    np.testing.assert_allclose(ds.ctf.defocus_u_a, 1e4)  # the CTF itself is physical: unchanged


def test_pose_pickle_translation_count_mismatch_and_garbage(tmp_path):
    rot = euler_to_matrix(np.zeros((3, 3)))
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump((rot, np.zeros((2, 2))), f)
    with pytest.raises(CountMismatchError) as e:
        read_poses_pkl(tmp_path / "p.pkl", box_size=8, apix=1.0)
    assert_names(e, tmp_path / "p.pkl", "translations")
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump((np.ones((3, 3, 3)), np.zeros((3, 2))), f)
    with pytest.raises(CorruptFileError) as e:
        read_poses_pkl(tmp_path / "bad.pkl", box_size=8, apix=1.0)
    assert_names(e, tmp_path / "bad.pkl", "rotations", "not proper rotation")
    (tmp_path / "junk.pkl").write_bytes(b"\x00garbage")
    with pytest.raises(CorruptFileError) as e:
        read_ctf_pkl(tmp_path / "junk.pkl")
    assert_names(e, tmp_path / "junk.pkl", None, "cannot unpickle")


def test_errors_leave_files_untouched(tmp_path, star_maker):
    """A failed load neither writes nor deletes anything beside the inputs."""
    case = star_maker(tmp_path, n=4, n_stacks=1)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    shutil.copy(case.path, tmp_path / "copy.star")
    (tmp_path / "copy.star").write_text(case.path.read_text().replace("@Extract", "@Missing"))
    with pytest.raises(MissingStackError):
        load_dataset(tmp_path / "copy.star")
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([*before, "copy.star"])
