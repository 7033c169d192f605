"""The ``rlnImageName`` helpers: splitting ``index@stack`` and parsing the indices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.mark.parametrize("dtype", [object, "str"])
def test_split_image_names_matches_partition_at_first_at(dtype):
    from napari_cryohet.io.image_names import _parse_image_indices, _split_image_names

    names = pd.Series(["000001@a/s.mrcs", "12@b.mrcs", "plain.mrcs", "3@x@y.mrcs", "@c.mrcs", "1000000@a/s.mrcs",
                       "4@"], index=[10, 11, 12, 13, 14, 15, 16], dtype=dtype)
    index_text, file_text, has_at = _split_image_names(names)
    parts = names.astype(str).str.partition("@")  # the oracle: split at the first '@'
    assert index_text.tolist() == parts[0].where(parts[1] == "@", "1").tolist()
    assert file_text.tolist() == parts[2].where(parts[1] == "@", parts[0]).tolist()
    assert has_at.tolist() == [True, True, False, True, True, True, True]
    np.testing.assert_array_equal(_parse_image_indices(index_text), [1, 12, 1, 3, np.nan, 1000000, 4])
    np.testing.assert_array_equal(_parse_image_indices(pd.Series(["7", "x2"], dtype=dtype)), [7, np.nan])
