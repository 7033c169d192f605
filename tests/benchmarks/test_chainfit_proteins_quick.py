"""benchmarks/chainfit_proteins.py: the bundled structures, its divergence rule, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"protein", "n_residues", "basis", "avg_error_before_A", "avg_error_A", "max_error_A", "seconds_per_epoch",
            "diverged"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("chainfit_proteins", ROOT / "benchmarks" / "chainfit_proteins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "n_residues", "segments"), [("1a28", 500, 2), ("6msm", 1181, 5)])
def test_bundled_structures_read_as_documented(bench, name, n_residues, segments):
    from napari_cryohet.io.pdb import read_ca_chains

    _, path, chains = bench.PROTEINS[name]
    read = read_ca_chains(path, chain=chains)
    print(f"{name}: {len(read.coords)} residues, {len(read.segments)} segments, gaps {read.gaps.tolist()}")
    assert len(read.coords) == n_residues
    assert len(read.segments) == segments
    assert not read.excluded  # Cα of standard amino acids only: nothing for the reader to leave out
    bonds = np.linalg.norm(np.diff(read.coords, axis=0), axis=1)
    inside = np.delete(bonds, read.gaps)
    assert 2.8 < inside.min() and inside.max() < 4.2  # every bond a real Cα–Cα bond
    assert path.stat().st_size < 150_000


def test_divergence_rule(bench):
    record = lambda avg: {"avg_error_a": avg, "max_error_a": 2 * avg}  # noqa: E731
    assert not bench.diverged([record(a) for a in (3.0, 2.5, 1.4)])
    assert bench.diverged([record(a) for a in (3.0, 3.7, 1.4)])  # an epoch above 1.2 × initial
    assert bench.diverged([record(a) for a in (3.0, 3.1, 3.0)])  # not below the initial error
    assert bench.diverged([record(a) for a in (3.0, float("nan"), 1.0)])


def test_apix_fills_three_quarters_of_the_box(bench):
    chain = np.zeros((3, 3))
    chain[2, 0] = 96.0  # extent 96 Å → 96 / (0.75 × 64) = 2 Å/px
    assert bench.apix_for(chain, 64) == 2.0
    chain[2, 0] = 97.0
    assert bench.apix_for(chain, 64) == 2.25  # rounded up


def test_quick_run_same_keys_and_untrained_error_within_the_motion(bench, tmp_path, capsys):
    """Every protein, eigenvector basis, 150 particles, 1 epoch: the rows have the documented keys and
    the untrained reference's held-out error stays within the motion's size (ANM RMSD ≤ 5 Å; AdK's
    DIMS frames ≤ 7.6 Å from frame 0) — a reference whose gaps were rebuilt as 3.8-Å bonds is ~45 Å off."""
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--n-particles", "150", "--epochs", "1", "--threads", "1",
                       "--bases", "eigenvectors", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("chainfit_proteins: 3 rows")
    doc = json.loads(out.read_text())
    assert set(doc["targets"]) == {"no_divergence", "halved_every_protein"}
    rows = {r["protein"]: r for r in doc["rows"]}
    assert set(rows) == {"adk", "1a28", "6msm"}
    for name, bound_a in (("adk", 7.6), ("1a28", 5.0), ("6msm", 5.0)):
        row = rows[name]
        print(f"{name}: before {row['avg_error_before_A']:.2f} Å, after {row['avg_error_A']:.2f} Å")
        assert ROW_KEYS <= set(row)
        assert row["basis"] == "eigenvectors" and row["epochs"] == 1
        assert 0 < row["avg_error_before_A"] < bound_a
        assert np.isfinite(row["avg_error_A"]) and np.isfinite(row["max_error_A"])
    assert (rows["adk"]["n_residues"], rows["1a28"]["n_residues"], rows["6msm"]["n_residues"]) == (214, 500, 1181)
    assert (rows["1a28"]["segments"], rows["6msm"]["segments"]) == (2, 5)


def test_in_span_floor_is_zero_inside_the_modes_and_the_orthogonal_part_outside(bench):
    """The normal-mode rows' oracle floor: a chain moved along the fit's own modes is reached
    exactly (floor 0), and a rigid translation — orthogonal to every elastic-network mode —
    is left whole (floor = its length), whatever else the chain does inside the span."""
    from types import SimpleNamespace

    from napari_cryohet.stages.chainfit import ChainFitConfig
    from napari_cryohet.stages.chainfit.normal_modes import mode_displacements

    t = np.linspace(0, 8 * np.pi, 60)
    ref = np.stack([2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * t], axis=1)  # a 60-residue helix
    config = ChainFitConfig(basis="normal_modes", n_modes=4)
    delta, _, _ = mode_displacements(ref, 4, config.mode_cutoff_a, config.mode_min_collectivity)
    rng = np.random.default_rng(0)
    inside = ref + np.einsum("nk,kmd->nmd", rng.normal(0, 2.0, (5, 4)), delta)
    reference = SimpleNamespace(coords_a=ref)
    avg, mx = bench.in_span_errors(reference, SimpleNamespace(ground_truth={"coords_a": inside}), config)
    assert avg < 1e-6 and mx < 1e-6
    shift = np.array([1.5, -2.0, 0.0])  # 2.5 Å
    avg, mx = bench.in_span_errors(reference, SimpleNamespace(ground_truth={"coords_a": inside + shift}), config)
    assert avg == pytest.approx(2.5, abs=1e-6) and mx == pytest.approx(2.5, abs=1e-6)
