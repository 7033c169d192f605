"""napari reader and writer of napari-cryohet (issue 2, items 5 and 6)."""

from __future__ import annotations

import importlib
import resource
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.io.errors import (
    CorruptFileError,
    CryohetInputError,
    EmptyFileError,
    ImageShapeError,
    MissingStackError,
    NonFiniteImageError,
    PixelSizeError,
    StackIndexError,
)
from napari_cryohet.plugin._reader import DATASET_KEY, TABLE_KEY, get_reader
from napari_cryohet.plugin._writer import write_mrc as write_layer_mrc

PLUGIN = "napari-cryohet"
MANIFEST = Path(__file__).resolve().parents[2] / "src" / "napari_cryohet" / "napari.yaml"


def test_manifest_is_valid_and_every_command_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    ids = {c.id for c in manifest.contributions.commands}
    assert {"napari-cryohet.get_reader", "napari-cryohet.write_mrc", "napari-cryohet.stack_viewer"} <= ids
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name
    patterns = manifest.contributions.readers[0].filename_patterns
    assert {"*.star", "*.mrcs", "*.mrc", "*.map"} <= set(patterns)


def test_get_reader_claims_only_our_suffixes(tmp_path):
    assert get_reader(str(tmp_path / "a.tif")) is None
    assert get_reader([str(tmp_path / "a.star"), str(tmp_path / "b.png")]) is None
    for name in ("a.star", "a.mrcs", "a.MRC", "a.map"):
        assert callable(get_reader(str(tmp_path / name)))


def test_star_opens_as_lazy_stack_with_dataset_and_table(make_napari_viewer, tmp_path, star_project):
    star, images, particles = star_project(tmp_path)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(star), plugin=PLUGIN)
    assert layer.data.shape == images.shape
    assert not isinstance(layer.data, np.ndarray)  # the lazy stack, not a copy
    assert tuple(layer.scale) == pytest.approx((1.0, 2.0, 2.0))
    ds = layer.metadata[DATASET_KEY]
    assert isinstance(ds, ParticleDataset) and len(ds) == len(particles)
    table = layer.metadata[TABLE_KEY]
    np.testing.assert_allclose(table["rlnDefocusU"], particles["rlnDefocusU"])
    assert list(table["rlnMicrographName"]) == list(particles["rlnMicrographName"])
    # contrast limits come from sampled images and bracket most of the data
    lo, hi = layer.contrast_limits
    assert lo < np.percentile(images, 5) and hi > np.percentile(images, 95)
    # images across both stacks come back in row order
    for i in (0, 6, 7, 11):
        np.testing.assert_array_equal(np.asarray(layer.data[i]), images[i])
    viewer.dims.set_current_step(0, 9)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), images[9])


def test_mrcs_stack_and_mrc_volume(make_napari_viewer, tmp_path, write_mrc_file):
    write_mrc = write_mrc_file
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(5, 12, 12)).astype(np.float32)
    volume = rng.normal(size=(12, 12, 12)).astype(np.float32)
    write_mrc(tmp_path / "s.mrcs", stack, 1.7)
    write_mrc(tmp_path / "v.mrc", volume, 1.3, volume=True)
    write_mrc(tmp_path / "s2.mrc", stack, 1.7)  # a non-cubic .mrc is a stack
    viewer = make_napari_viewer()
    [s] = viewer.open(str(tmp_path / "s.mrcs"), plugin=PLUGIN)
    assert s.data.shape == (5, 12, 12) and tuple(s.scale) == pytest.approx((1, 1.7, 1.7))
    np.testing.assert_array_equal(np.asarray(s.data[3]), stack[3])
    assert s.metadata[DATASET_KEY].apix == pytest.approx(1.7)
    [v] = viewer.open(str(tmp_path / "v.mrc"), plugin=PLUGIN)
    assert tuple(v.scale) == pytest.approx((1.3, 1.3, 1.3))
    np.testing.assert_array_equal(np.asarray(v.data), volume)
    assert DATASET_KEY not in v.metadata
    [s2] = viewer.open(str(tmp_path / "s2.mrc"), plugin=PLUGIN)
    assert DATASET_KEY in s2.metadata and s2.data.shape == (5, 12, 12)


def _corrupt_files(tmp_path: Path, write_star_project, write_mrc) -> dict[str, tuple[Path, type]]:
    star, images, particles = write_star_project(tmp_path / "ok")
    truncated = write_mrc(tmp_path / "trunc.mrcs", np.ones((4, 16, 16), np.float32), 1.0)
    truncated.write_bytes(truncated.read_bytes()[:1024 + 16 * 16 * 4 * 2])
    garbage = tmp_path / "garbage.mrc"
    garbage.write_bytes(b"\x00\x01not an mrc file" * 10)
    no_apix = write_mrc(tmp_path / "noapix.mrc", np.ones((8, 8, 8), np.float32), 0.0, volume=True)
    text = star.read_text()
    past_end = tmp_path / "ok" / "past_end.star"
    past_end.write_text(text.replace("000005@Extract/stack_1.mrcs", "000099@Extract/stack_1.mrcs"))
    missing = tmp_path / "ok" / "missing.star"
    missing.write_text(text.replace("Extract/stack_1.mrcs", "Extract/gone.mrcs"))
    nan_images = np.ones((4, 16, 16), np.float32)
    nan_images[0, 3, 5] = np.nan  # image 0 is among the sampled images
    nan_stack = write_mrc(tmp_path / "nan.mrcs", nan_images, 1.0)
    odd = write_mrc(tmp_path / "odd.mrcs", np.ones((3, 15, 15), np.float32), 1.0)
    empty = tmp_path / "empty.star"
    empty.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n")
    return {
        "nan": (nan_stack, NonFiniteImageError),
        "odd": (odd, ImageShapeError),
        "empty": (empty, EmptyFileError),
        "truncated": (truncated, CorruptFileError),
        "garbage": (garbage, CorruptFileError),
        "no_apix": (no_apix, PixelSizeError),
        "past_end": (past_end, StackIndexError),
        "missing": (missing, MissingStackError),
    }


def test_bad_files_raise_named_errors_and_napari_keeps_running(make_napari_viewer, tmp_path, star_project,
                                                              write_mrc_file):
    viewer = make_napari_viewer()
    for label, (path, error) in _corrupt_files(tmp_path, star_project, write_mrc_file).items():
        with pytest.raises(CryohetInputError) as info:
            viewer.open(str(path), plugin=PLUGIN)
        err = info.value
        # napari may wrap the reader's exception; ours is the error or its cause
        while not isinstance(err, error) and err.__cause__ is not None:
            err = err.__cause__
        assert isinstance(err, error), (label, repr(info.value))
        assert path.name in str(err) or "stack_1" in str(err) or "gone" in str(err), (label, str(err))
    # the viewer is still usable: no layer half-added, a good file opens, layers work
    assert len(viewer.layers) == 0
    star, images, _ = star_project(tmp_path / "good")
    [layer] = viewer.open(str(star), plugin=PLUGIN)
    viewer.dims.set_current_step(0, 2)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), images[2])
    viewer.add_image(np.zeros((4, 4)))
    assert len(viewer.layers) == 2


def test_large_star_is_not_read_up_front(make_napari_viewer, tmp_path):
    """A 20 000-particle star over a 330 MB sparse stack opens without reading the stack."""
    n, d = 20_000, 64
    stack = tmp_path / "big.mrcs"
    with mrcfile.new_mmap(stack, shape=(n, d, d), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        mrc.voxel_size = 1.0
    names = "\n".join(f"{i + 1:06d}@big.mrcs\t{1000.0 + i}" for i in range(n))
    star = tmp_path / "big.star"
    star.write_text("data_\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n" + names + "\n")
    viewer = make_napari_viewer()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    [layer] = viewer.open(str(star), plugin=PLUGIN)
    viewer.dims.set_current_step(0, n - 1)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert layer.data.shape == (n, d, d)
    assert grown_mb < 150, f"resident memory grew by {grown_mb:.0f} MB (stack is {n * d * d * 4 / 1e6:.0f} MB)"


def test_writer_volume_and_stack_keep_voxel_size(make_napari_viewer, tmp_path, star_project):
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(10, 10, 10)).astype(np.float32)
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume, scale=(1.25, 1.25, 1.25), name="vol")
    [written] = viewer.layers.save(str(tmp_path / "vol.mrc"), selected=False, plugin=PLUGIN)
    with mrcfile.open(written) as mrc:
        np.testing.assert_array_equal(mrc.data, volume)
        assert float(mrc.voxel_size.x) == pytest.approx(1.25)
    # the writer hook directly, on a lazy stack layer's data: .mrcs keeps it a stack
    star, images, _ = star_project(tmp_path / "p")
    [stack_layer] = viewer.open(str(star), plugin=PLUGIN)
    data, meta, _ = stack_layer.as_layer_data_tuple()
    [out] = write_layer_mrc(str(tmp_path / "copy.mrcs"), data, meta)
    with mrcfile.open(out) as mrc:
        np.testing.assert_array_equal(mrc.data, images)
        assert float(mrc.voxel_size.x) == pytest.approx(2.0)
        assert mrc.header.ispg == 0  # image stack
    assert layer.name == "vol"
