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
