"""Star tables: both RELION layouts are read; writing then reading gives identical tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cryohet.io.star import StarTables, read_star, write_star


def test_read_relion31_tables(tmp_path, star_maker):
    case = star_maker(tmp_path, n=10)
    t = read_star(case.path)
    assert t.is_relion31 and t.particles_block == "particles"
    assert list(t.optics["rlnOpticsGroup"]) == [1, 2]
    assert list(t.optics["rlnVoltage"]) == [300.0, 200.0]
    assert len(t.particles) == 10
    assert t.particles["rlnImageName"].iloc[0] == f"{6:06d}@Extract/mic000.mrcs"
    np.testing.assert_allclose(t.particles["rlnAngleTilt"], case.euler_deg[:, 1])
    assert t.particles["rlnGroupName"].iloc[3] == "group_03"


def test_read_pre31_single_table(tmp_path, star_maker):
    case = star_maker(tmp_path, n=6, relion31=False)
    t = read_star(case.path)
    assert not t.is_relion31 and t.optics is None
    assert t.particles_block == ""
    assert {"rlnOriginX", "rlnDetectorPixelSize", "rlnVoltage"} <= set(t.particles.columns)


@pytest.mark.parametrize("relion31", [True, False])
def test_write_read_round_trip_is_exact(tmp_path, star_maker, relion31):
    case = star_maker(tmp_path, n=9, relion31=relion31)
    t = read_star(case.path)
    out = write_star(tmp_path / "copy.star", t)
    back = read_star(out)
    pd.testing.assert_frame_equal(back.particles, t.particles, check_exact=True)
    if relion31:
        pd.testing.assert_frame_equal(back.optics, t.optics, check_exact=True)
        assert "# version 30001" in out.read_text()
    else:
        assert back.optics is None
    assert back.particles_block == t.particles_block


def test_writer_keeps_full_precision_quotes_spaces_and_extra_blocks(tmp_path):
    parts = pd.DataFrame({
        "rlnImageName": ["000001@a b/stack.mrcs", "000002@plain.mrcs"],
        "rlnDefocusU": [12345.678901234567, 1e-7],
        "rlnClassNumber": [1, 2],
        "rlnCustomNote": ["two words", "x"],
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0 / 3.0]})
    t = StarTables(optics=optics, particles=parts, extra={"general": {"rlnNrClasses": 3}})
    write_star(tmp_path / "x.star", t)
    back = read_star(tmp_path / "x.star")
    assert back.particles["rlnDefocusU"].tolist() == [12345.678901234567, 1e-7]
    assert back.optics["rlnImagePixelSize"].iloc[0] == 1.0 / 3.0
    assert back.particles["rlnImageName"].tolist() == parts["rlnImageName"].tolist()
    assert back.particles["rlnCustomNote"].tolist() == ["two words", "x"]
    assert back.particles["rlnClassNumber"].dtype.kind == "i"
    # the starfile library (an independent reader) agrees
    blocks = starfile.read(tmp_path / "x.star", always_dict=True)
    assert blocks["general"]["rlnNrClasses"] == 3
    assert blocks["particles"]["rlnCustomNote"].tolist() == ["two words", "x"]


# --------------------------------------------------------------------------- fast parser
# _read_blocks_fast must return exactly what starfile.read(path, always_dict=True) returns
# (values, dtypes, column names), or None where it cannot guarantee that.

from napari_cryohet.io import star as star_module  # noqa: E402

RELION31_TEXT = """# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnImagePixelSize #6
opticsGroup1 1 300.000000 2.700000 0.100000 1.0500
opticsGroup2 2 200 -2.7e+00 1E-1 1.0500


# version 30001

data_particles

loop_
_rlnImageName #1
_rlnMicrographName #2
_rlnAngleRot #3
_rlnAngleTilt #4
_rlnOriginXAngst #5
_rlnDefocusU #6
_rlnClassNumber #7
_rlnOpticsGroup #8
_rlnGroupName #9
_rlnLogLikeliContribution #10
_rlnRandomSubset #11
000001@Extract/job007/mic_001.mrcs MotionCorr/mic_001.mrc -179.5 90.0 -1.25 1.2345e+04 1 1 group_01 -3.5E+05 nan
000002@Extract/job007/mic_001.mrcs MotionCorr/mic_001.mrc 12.0 1e-3 3.000000 15000 -2 2 group_02 2.5e-7 NaN
   000003@Extract/job007/mic_002.mrcs\tMotionCorr/mic_002.mrc  0 -0.0 1e+01 -1.5E-3 3 1 group_03 7 <NA>

# a comment line in the middle of the block
000004@Extract/job007/mic_002.mrcs MotionCorr/mic_002.mrc .5 -.5 +2 16000.5 4 2 group_04 -0.0 nan   \t
000005@Extract/job007/mic_003.mrcs MotionCorr/mic_003.mrc 1 2 3 4 5 1 7 8 nan # trailing comment
"""

RELION30_TEXT = """
data_

loop_
_rlnImageName #1
_rlnDefocusU #2
_rlnDefocusV #3
_rlnOriginX #4
_rlnOriginY #5
_rlnDetectorPixelSize #6
_rlnMagnification #7
_rlnCtfFigureOfMerit #8
_rlnMicrographName #9
_rlnVoltage #10
1@stack.mrcs 2.0e4 -1.9E+04 -3 4 14.0 10000 1e-300 mic1.mrc 300
2@stack.mrcs 20001 19000 -3.5 -4 14.0 10000 -2.5e+300 mic1.mrc 300
3@stack.mrcs 20002.25 19000 0 0 14.0 10000 3 mic2.mrc 300
"""

QUOTED_TEXT = """
data_images

loop_
_rlnImageName #1
_rlnComment #2
_rlnDefocusU #3
_rlnNote #4
1@a.mrcs "two words" 1.5e3 plain
2@a.mrcs 'single quoted' -2 "x"
3@a.mrcs "" 3 'it''s'
"""

EMPTY_THEN_LOOP_TEXT = """
data_empty

loop_
_rlnA #1
_rlnB #2

data_particles
loop_
_rlnImageName #1
_rlnFlag #2
_rlnValue #3
1@s.mrcs True -1
2@s.mrcs False 1e5
"""


def _assert_same_blocks(ours, reference):
    assert list(ours) == list(reference)
    for name in reference:
        pd.testing.assert_frame_equal(ours[name], reference[name], check_exact=True)
        assert [ours[name][c].dtype for c in ours[name].columns] == \
            [reference[name][c].dtype for c in reference[name].columns]


@pytest.mark.parametrize("chunk", [16, 1 << 22])  # 16 bytes: many scan chunks, long lines split
@pytest.mark.parametrize("text", [RELION31_TEXT, RELION30_TEXT, QUOTED_TEXT, EMPTY_THEN_LOOP_TEXT],
                         ids=["relion31", "relion30", "quoted", "empty_loop"])
def test_fast_parser_equals_starfile(tmp_path, monkeypatch, text, chunk):
    monkeypatch.setattr(star_module, "_SCAN_CHUNK", chunk)
    path = tmp_path / "x.star"
    path.write_text(text.replace("\\t", "\t"))
    ours = star_module._read_blocks_fast(path)
    assert ours is not None  # these files are within what the fast path guarantees
    _assert_same_blocks(ours, starfile.read(path, always_dict=True))


def test_fast_parser_dtypes_and_values(tmp_path):
    path = tmp_path / "x.star"
    path.write_text(RELION31_TEXT.replace("\\t", "\t"))
    parts = star_module._read_blocks_fast(path)["particles"]
    assert len(parts) == 5
    assert parts["rlnClassNumber"].tolist() == [1, -2, 3, 4, 5] and parts["rlnClassNumber"].dtype.kind == "i"
    assert parts["rlnDefocusU"].dtype.kind == "f" and parts["rlnDefocusU"].tolist() == [12345.0, 15000.0, -0.0015,
                                                                                        16000.5, 4.0]
    assert parts["rlnLogLikeliContribution"].tolist() == [-3.5e5, 2.5e-7, 7.0, -0.0, 8.0]
    assert parts["rlnImageName"].iloc[2] == "000003@Extract/job007/mic_002.mrcs"
    assert parts["rlnGroupName"].tolist()[:2] == ["group_01", "group_02"] and parts["rlnGroupName"].iloc[4] == "7"
    assert parts["rlnRandomSubset"].isna().all()
    quoted = tmp_path / "q.star"
    quoted.write_text(QUOTED_TEXT)
    images = star_module._read_blocks_fast(quoted)["images"]
    assert images["rlnComment"].tolist()[:2] == ["two words", "single quoted"]
    assert images["rlnDefocusU"].tolist() == [1500.0, -2.0, 3.0]


@pytest.mark.parametrize("text", [
    "data_general\n\n_rlnNrClasses 3\n\n" + RELION30_TEXT,  # a non-loop block
    QUOTED_TEXT.replace("'it''s'", "it's"),  # a lone quote: a quoted value could span lines
    RELION30_TEXT.replace("mic2.mrc", "mïc2.mrc"),  # non-ASCII bytes
    RELION30_TEXT.replace("mic2.mrc", "mic2.mrc\r"),  # a carriage return
    RELION30_TEXT.replace("_rlnVoltage #10", "_rlnDefocusU #10"),  # duplicate column names
])
def test_fast_parser_declines_what_it_cannot_guarantee(tmp_path, monkeypatch, text):
    path = tmp_path / "x.star"
    path.write_text(text, encoding="utf-8")
    assert star_module._read_blocks_fast(path) is None
    # read_star then falls back to starfile, with starfile's result
    monkeypatch.setattr(star_module, "FAST_PARSE_MIN_BYTES", 0)
    try:
        reference = starfile.read(path, always_dict=True)
    except Exception:
        return  # starfile rejects it as well (read_star raises CorruptFileError)
    ours = read_star(path)
    name = ours.particles_block
    pd.testing.assert_frame_equal(ours.particles, reference[name].reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize("relion31", [True, False])
def test_read_star_takes_fast_path_above_threshold(tmp_path, monkeypatch, star_maker, relion31):
    case = star_maker(tmp_path, n=12, relion31=relion31)
    slow = read_star(case.path)  # small file: starfile
    calls = []
    real = star_module._read_blocks_fast
    monkeypatch.setattr(star_module, "FAST_PARSE_MIN_BYTES", 0)
    monkeypatch.setattr(star_module, "_read_blocks_fast", lambda p: calls.append(p) or real(p))
    fast = read_star(case.path)
    assert calls == [case.path]
    pd.testing.assert_frame_equal(fast.particles, slow.particles, check_exact=True)
    if relion31:
        pd.testing.assert_frame_equal(fast.optics, slow.optics, check_exact=True)
    assert fast.particles_block == slow.particles_block and fast.extra.keys() == slow.extra.keys()
