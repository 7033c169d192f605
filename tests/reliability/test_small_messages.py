"""Issue 16 item 4: the words users see for a directory given as a file, a NaN cell and a bad
filter expression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryohet.io.cryodrgn import read_ctf_pkl
from napari_cryohet.io.errors import MissingFileError, require_file, shown_value
from napari_cryohet.io.json_files import read_json
from napari_cryohet.io.mrc_header import read_stack_header
from napari_cryohet.io.star import read_star
from napari_cryohet.plugin._particle_filter import ALLOWED, _filter_rows


@pytest.mark.parametrize("reader", [read_star, read_stack_header, read_ctf_pkl, read_json],
                         ids=["star", "mrc header", "cryoDRGN pickle", "json"])
def test_a_directory_is_called_a_directory(tmp_path, reader):
    folder = tmp_path / "particles.star"
    folder.mkdir()
    with pytest.raises(MissingFileError) as e:
        reader(folder)
    msg = str(e.value)
    assert str(folder) in msg and "is a directory" in msg and "does not exist" not in msg


def test_require_file_missing_and_present(tmp_path):
    with pytest.raises(MissingFileError, match="the stack does not exist"):
        require_file(tmp_path / "gone.mrcs", "the stack")
    (tmp_path / "here.mrcs").write_bytes(b"x")
    assert require_file(tmp_path / "here.mrcs", "the stack") == tmp_path / "here.mrcs"


@pytest.mark.parametrize(("value", "shown"), [(np.float64(np.nan), "nan"), (np.float32(1.5), "1.5"),
                                              ("12.x", "'12.x'"), (np.int64(3), "3"), (float("inf"), "inf")])
def test_values_are_shown_plainly(value, shown):
    assert shown_value(value) == shown


FRAME = pd.DataFrame({"rlnDefocusU": [10000.0, 20000.0, 30000.0], "rlnClassNumber": [1, 2, 2]})


@pytest.mark.parametrize("text", ["rlnDefocusU >> 3", "rlnDefocusU > ", "rlnDefocusU << 2 | 1"])
def test_bad_filter_says_what_is_allowed(text):
    with pytest.raises(ValueError) as e:
        _filter_rows(FRAME, text)
    msg = str(e.value)
    assert ALLOWED in msg and repr(text) in msg
    assert "Pandas" not in msg and "visit_" not in msg, msg


def test_unknown_column_lists_the_columns():
    with pytest.raises(ValueError, match="rlnNoSuch.*the columns are rlnDefocusU, rlnClassNumber"):
        _filter_rows(FRAME, "rlnNoSuch > 1")


def test_good_filters_still_work():
    np.testing.assert_array_equal(_filter_rows(FRAME, "rlnDefocusU > 15000 and rlnClassNumber == 2"), [1, 2])
    np.testing.assert_array_equal(_filter_rows(FRAME, "not (rlnClassNumber == 2)"), [0])
