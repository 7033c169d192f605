"""cryoSPARC ``.cs`` particle files (io/cryosparc.py, through ``load_dataset`` and ``cryohet info``).

The ``.cs`` files are built here with NumPy from cryoSPARC's documented record layout;
rotation vectors come from SciPy's ``Rotation.from_euler("ZYZ", ...)`` (not from the
package's rotation code) and are checked against a hand-written RELION star file of the
same particles, read through the RELION path.
"""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_cryohet.cli import main as cli_main
from napari_cryohet.io.cryosparc import cs_rotations, read_cs, read_cs_ctf, read_cs_fields
from napari_cryohet.io.errors import (
    CorruptFileError,
    CountMismatchError,
    MissingColumnError,
    MissingStackError,
)
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.write_particles import write_dataset_star

CRYODRGN_REPO = Path(os.environ.get("CRYODRGN_REPO", "/work/.mirror/ml-struct-bio+cryodrgn/repo"))


def save_cs(path: Path, fields: dict[str, np.ndarray]) -> Path:
    """Write ``fields`` as a cryoSPARC ``.cs`` structured array (np.save through a handle: no ``.npy``)."""
    n = len(next(iter(fields.values())))
    dtype = [(k, v.dtype, v.shape[1:]) for k, v in fields.items()]
    arr = np.zeros(n, dtype=dtype)
    for k, v in fields.items():
        arr[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, arr)
    return path


def cs_fields_for(star, ds_star, project: Path, seed: int = 1) -> dict[str, np.ndarray]:
    """cryoSPARC fields describing the particles of a StarCase (same images, pose, CTF)."""
    n = len(star.euler_deg)
    rng = np.random.default_rng(seed)
    images = ds_star.images
    rel = [os.path.relpath(s.path, project) for s in images.stacks]
    rotvec = Rotation.from_euler("ZYZ", np.deg2rad(star.euler_deg)).as_rotvec()  # intrinsic z-y-z, SciPy
    d = ds_star.box_size
    return {
        "uid": np.unique(rng.integers(2**40, 2**63 - 1, size=4 * n, dtype=np.uint64))[:n][rng.permutation(n)],
        "blob/path": np.array([(">" if i % 3 == 0 else "") + rel[c] for i, c in enumerate(images.file_codes)],
                              dtype="S64"),
        "blob/idx": images.image_indices.astype(np.uint32),
        "blob/shape": np.tile(np.array([d, d], np.uint32), (n, 1)),
        "blob/psize_A": np.full(n, star.apix, np.float32),
        "blob/sign": np.full(n, -1.0, np.float32),
        "ctf/type": np.array([b"ctffind4"] * n, dtype="S9"),
        "ctf/accel_kv": star.voltage.astype(np.float32),
        "ctf/cs_mm": star.cs.astype(np.float32),
        "ctf/amp_contrast": star.q0.astype(np.float32),
        "ctf/df1_A": star.defocus_u.astype(np.float32),
        "ctf/df2_A": star.defocus_v.astype(np.float32),
        "ctf/df_angle_rad": np.deg2rad(star.defocus_angle_deg).astype(np.float32),
        "ctf/phase_shift_rad": np.deg2rad(star.phase_shift_deg).astype(np.float32),
        "ctf/bfactor": np.zeros(n, np.float32),
        "alignments3D/shift": (star.shifts_a / star.apix).astype(np.float32),
        "alignments3D/pose": rotvec.astype(np.float32),
        "alignments3D/psize_A": np.full(n, star.apix, np.float32),
    }


@pytest.fixture
def cs_case(tmp_path, star_maker):
    """A RELION star file and a .cs file (in the job folder J24/) for the same 12 particles."""
    star = star_maker(tmp_path, n=12, d=16)
    ds_star = load_dataset(star.path)
    fields = cs_fields_for(star, ds_star, tmp_path)
    cs = save_cs(tmp_path / "J24" / "J24_particles.cs", fields)
    return star, ds_star, fields, cs


def _assert_same_particles(a, b, *, pose_atol=2e-6, shift_atol=2e-5):
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.get_images(np.arange(len(a))), b.get_images(np.arange(len(b))))
    assert a.apix == pytest.approx(b.apix, rel=1e-6)
    err_r = np.abs(a.rotations.astype(np.float64) - b.rotations).max()
    err_s = np.abs(a.shifts_a.astype(np.float64) - b.shifts_a).max()
    print(f"rotation |ΔR|max = {err_r:.2e}, shift |Δ|max = {err_s:.2e} Å")
    assert err_r < pose_atol
    assert err_s < shift_atol
    for name, va in a.ctf.as_dict().items():
        np.testing.assert_allclose(va, getattr(b.ctf, name), rtol=2e-7, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- convention

def test_cs_and_relion_star_describe_the_same_particles(cs_case):
    star, ds_star, fields, cs = cs_case
    ds = load_dataset(cs, require=("images", "poses", "ctf"))
    _assert_same_particles(ds, ds_star)
    assert ds.meta["cs_path"] == str(cs)
    np.testing.assert_array_equal(ds.table["uid"].to_numpy(), fields["uid"])
    assert ds.table["blob/sign"].tolist() == [-1.0] * len(ds)
    assert set(ds.table["blob/path"].str[:1]) >= {">"}  # the table keeps the field as written


def test_rotation_vector_hand_computed():
    # v = (0, 0, π/2): exp = active 90° about z = [[0,-1,0],[1,0,0],[0,0,1]]; the pose is its
    # transpose, which is RELION's matrix for rot = 90°, tilt = psi = 0 (passive R_z(90°)).
    r = cs_rotations(np.array([[0.0, 0.0, np.pi / 2], [np.pi / 2, 0.0, 0.0]]))
    np.testing.assert_allclose(r[0], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-7)
    # v = (π/2, 0, 0): exp = [[1,0,0],[0,0,-1],[0,1,0]] (active about x), transposed
    np.testing.assert_allclose(r[1], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-7)


needs_cryodrgn = pytest.mark.skipif(
    not (CRYODRGN_REPO / "HEAD").exists() and not (CRYODRGN_REPO / ".git").exists(),
    reason="no local copy of cryoDRGN's repository (set CRYODRGN_REPO)")


def _cryodrgn_file(folder: Path, name: str) -> Path:
    """A file of cryoDRGN's tests/data, copied into ``folder`` from the local git copy (never committed here)."""
    out = folder / name
    out.write_bytes(subprocess.run(["git", "-C", str(CRYODRGN_REPO), "show", f"HEAD:tests/data/{name}"],
                                   check=True, capture_output=True).stdout)
    return out


@needs_cryodrgn
def test_matches_cryodrgn_parsed_poses(tmp_path):
    """cryoDRGN's test .cs and the pose / CTF pickles its parse_*_csparc wrote from it."""
    def show(name):
        return _cryodrgn_file(tmp_path, name)

    cs = show("cryosparc_P12_J24_001_particles.cs")
    fields, _ = read_cs_fields(cs)
    with open(show("pose.cs.pkl"), "rb") as f:
        rot, trans = pickle.load(f)
    with open(show("ctf2.pkl"), "rb") as f:  # parse_ctf_csparc's output for the same file
        ctf_pkl = np.asarray(pickle.load(f), dtype=np.float64)
    ctf = read_cs_ctf(cs)
    ours = np.stack([ctf.defocus_u_a, ctf.defocus_v_a, np.rad2deg(ctf.defocus_angle_rad), ctf.voltage_kv,
                     ctf.cs_mm, ctf.amplitude_contrast, np.rad2deg(ctf.phase_shift_rad)], -1)
    np.testing.assert_allclose(ours, ctf_pkl[:, 2:], rtol=1e-6, atol=1e-4)
    assert np.all(ctf_pkl[:, 1] == fields["blob/psize_A"])
    d = int(fields["blob/shape"][0, 0])
    err_r = np.abs(cs_rotations(fields["alignments3D/pose"]) - rot).max()
    err_t = np.abs(fields["alignments3D/shift"] / d - trans).max()
    print(f"{len(rot)} particles: |ΔR|max = {err_r:.2e}, |Δtrans|max = {err_t:.2e} (fraction of {d} px)")
    assert err_r < 1e-5
    assert err_t < 1e-7


@needs_cryodrgn
def test_real_cryosparc_import_matches_its_star(tmp_path):
    """cryoDRGN's empiar_10076_7: a cryoSPARC-imported .cs, its .mrc and the RELION star of the same 7 images."""
    for name in ("empiar_10076_7.cs", "empiar_10076_7.mrc", "empiar_10076_7.star"):
        _cryodrgn_file(tmp_path, name)
    cs = load_dataset(tmp_path / "empiar_10076_7.cs", require=("images", "ctf"))
    star = load_dataset(tmp_path / "empiar_10076_7.star", require=("images", "ctf"))
    assert len(cs) == 7 and cs.box_size == 320 and cs.rotations is None
    assert cs.apix == pytest.approx(star.apix, rel=1e-6)
    np.testing.assert_array_equal(cs.get_images(np.arange(7)), star.get_images(np.arange(7)))
    for name, v in cs.ctf.as_dict().items():  # .cs values are float32
        np.testing.assert_allclose(v, getattr(star.ctf, name), rtol=1e-6, atol=1e-8, err_msg=name)


# --------------------------------------------------------------------------- units, merge, paths

def test_shift_uses_the_alignment_pixel_size(cs_case, tmp_path):
    star, ds_star, fields, _ = cs_case
    binned = dict(fields)
    binned["alignments3D/psize_A"] = fields["alignments3D/psize_A"] * 2  # a 2x-binned refinement
    binned["alignments3D/shift"] = fields["alignments3D/shift"] / 2
    ds = read_cs(save_cs(tmp_path / "J25" / "binned.cs", binned))
    np.testing.assert_allclose(ds.shifts_a, star.shifts_a, atol=2e-5)


def test_passthrough_merged_by_uid(cs_case, tmp_path):
    star, ds_star, fields, _ = cs_case
    main_names = ["uid", "alignments3D/shift", "alignments3D/pose", "alignments3D/psize_A"]
    main = save_cs(tmp_path / "J30" / "J30_particles.cs", {k: fields[k] for k in main_names})
    rng = np.random.default_rng(5)
    order = rng.permutation(len(fields["uid"]))
    pt_fields = {k: v[order] for k, v in fields.items() if k not in main_names[1:]}
    # two particles the main file does not have (cryoSPARC passthroughs may hold more)
    extra = {k: np.concatenate([v, v[:2]]) for k, v in pt_fields.items()}
    extra["uid"] = np.concatenate([pt_fields["uid"], np.array([1, 2], np.uint64)])
    extra["alignments3D/psize_A"] = np.full(len(extra["uid"]), 99.0, np.float32)  # main file's value wins
    pt = save_cs(tmp_path / "J30" / "J30_passthrough_particles.cs", extra)
    ds = load_dataset(main, passthrough=pt, require=("images", "poses", "ctf"))
    _assert_same_particles(ds, ds_star)
    assert ds.meta["cs_passthrough"] == [str(pt)]
    # not named: the passthrough file beside the main file is found and merged
    auto = load_dataset(main, require=("images", "poses", "ctf"))
    _assert_same_particles(auto, ds_star)
    assert auto.meta["cs_passthrough"] == [str(pt)]
    # a passthrough of another job in the same folder (other uids) is not taken
    other = {k: v for k, v in pt_fields.items()}
    other["uid"] = pt_fields["uid"] + np.uint64(1000)
    moved = pt.rename(tmp_path / "J30_passthrough_particles.cs")
    save_cs(tmp_path / "J30" / "J31_passthrough_particles.cs", other)
    with pytest.raises(MissingColumnError, match="passthrough"):
        load_dataset(main)  # blob fields are only in the (moved) passthrough
    moved.rename(pt)
    short = save_cs(tmp_path / "J30" / "short.cs", {k: v[1:] for k, v in pt_fields.items()})
    with pytest.raises(CountMismatchError, match=r"1 of the 12 particles") as err:
        read_cs(main, passthrough=short)
    assert err.value.field == "uid" and "short.cs" in str(err.value)


def test_stack_paths_relative_to_project_dir(cs_case, tmp_path):
    star, ds_star, fields, _ = cs_case
    # exported outside the project folder: neither its folder nor its parents hold Extract/
    cs = save_cs(tmp_path.parent / f"{tmp_path.name}_export" / "exported.cs", fields)
    with pytest.raises(MissingStackError, match="project_dir") as err:
        read_cs(cs)
    assert err.value.field == "blob/path" and "Extract/mic000.mrcs" in str(err.value)
    ds = load_dataset(cs, project_dir=tmp_path)
    _assert_same_particles(ds, ds_star)


def test_round_trip_cs_to_star(cs_case, tmp_path):
    star, ds_star, fields, cs = cs_case
    ds = load_dataset(cs)
    sub = ds.subset(np.array([7, 2, 9, 0]))
    out = write_dataset_star(tmp_path / "export" / "selection.star", sub)
    back = load_dataset(out, require=("images", "poses", "ctf"))
    _assert_same_particles(back, sub, pose_atol=5e-6, shift_atol=2e-5)
    # each particle keeps its cryoSPARC uid (pyem's ucsfUid label), exactly (uint64 through text)
    np.testing.assert_array_equal(back.table["ucsfUid"].to_numpy().astype(np.uint64), fields["uid"][[7, 2, 9, 0]])


# --------------------------------------------------------------------------- bad input

def test_missing_and_nan_fields_are_named(cs_case, tmp_path):
    star, ds_star, fields, _ = cs_case
    no_pose = {k: v for k, v in fields.items() if k != "alignments3D/pose"}
    path = save_cs(tmp_path / "J40" / "nopose.cs", no_pose)
    assert read_cs(path).rotations is None
    with pytest.raises(MissingColumnError, match="alignments3D/pose") as err:
        load_dataset(path, require=("poses",))
    assert "nopose.cs" in str(err.value)
    no_ctf = {k: v for k, v in fields.items() if k != "ctf/df2_A"}
    with pytest.raises(MissingColumnError, match="ctf/df2_A"):
        read_cs(save_cs(tmp_path / "J40" / "noctf.cs", no_ctf), require=("ctf",))
    nan = dict(fields)
    nan["ctf/df1_A"] = fields["ctf/df1_A"].copy()
    nan["ctf/df1_A"][4] = np.nan
    with pytest.raises(CorruptFileError, match=rf"row 4 \(uid {int(fields['uid'][4])}\)") as err:
        read_cs(save_cs(tmp_path / "J40" / "nan.cs", nan))
    assert err.value.field == "ctf/df1_A"
    bad_pose = dict(fields)
    bad_pose["alignments3D/pose"] = fields["alignments3D/pose"][:, :2]
    with pytest.raises(CorruptFileError, match=r"expected 3 numbers") as err:
        read_cs(save_cs(tmp_path / "J40" / "pose2.cs", bad_pose))
    assert err.value.field == "alignments3D/pose"


def test_not_a_structured_array(tmp_path):
    plain = tmp_path / "plain.cs"
    with open(plain, "wb") as f:
        np.save(f, np.zeros((4, 3)))
    with pytest.raises(CorruptFileError, match="structured array"):
        load_dataset(plain)
    mrc_like = tmp_path / "junk.cs"
    mrc_like.write_bytes(b"\x00" * 1024)
    with pytest.raises(CorruptFileError, match="junk.cs"):
        load_dataset(mrc_like)


def test_info_on_a_cs_file(cs_case, capsys):
    star, ds_star, fields, cs = cs_case
    assert cli_main(["info", str(cs)]) == 0
    out = capsys.readouterr().out
    print(out)
    info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert int(info["particles"]) == 12
    assert info["box"] == "16 px"
    assert float(info["pixel size"].split()[0]) == pytest.approx(star.apix)
    assert info["poses"] == info["shifts"] == info["ctf"] == "yes"
    assert info["kind"] == "cryoSPARC particles (.cs)"
    assert info["defocus"].startswith(f"{star.defocus_u.min():.0f} – {star.defocus_u.max():.0f}")


def test_napari_reader_opens_a_cs_file(cs_case):
    """File ▸ Open on a .cs: one particle-stack layer carrying the dataset with its poses and CTF,
    equal to the RELION file's for the same particles."""
    from napari_cryohet.plugin._reader import get_reader

    star, ds_star, fields, cs = cs_case
    reader = get_reader(str(cs))
    assert reader is not None
    (data, kwargs, kind), = reader(str(cs))
    assert kind == "image" and data.shape == (12, 16, 16)
    ds = next(v for k, v in kwargs["metadata"].items() if k.endswith("dataset"))
    np.testing.assert_allclose(ds.rotations, ds_star.rotations, atol=1e-6)
    np.testing.assert_allclose(np.asarray(data[3]), np.asarray(ds_star.images[3]))
