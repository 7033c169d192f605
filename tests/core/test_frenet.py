"""Discrete Frenet frames (App. A of 000_8d73a95ce4c6e7ab.txt): round trips and gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_cryohet.core.frenet import (
    angles_from_rotations,
    bond_lengths,
    build_chain,
    chain_angles,
    cumulative_rotations,
    frenet_frames,
    rotation_from_angles,
    transfer_rotations,
)

ADK = Path(__file__).resolve().parents[2] / "sample_data" / "adk_dims_ca.npz"


@pytest.fixture(scope="module")
def adk_coords() -> torch.Tensor:
    with np.load(ADK, allow_pickle=False) as data:
        return torch.as_tensor(data["coords"], dtype=torch.float64)  # (102, 214, 3)


def _random_chain(rng: np.random.Generator, batch: int, m: int, bond: float = 3.8) -> torch.Tensor:
    steps = rng.normal(size=(batch, m - 1, 3))
    steps *= bond / np.linalg.norm(steps, axis=-1, keepdims=True)
    start = rng.normal(scale=10.0, size=(batch, 1, 3))
    return torch.as_tensor(np.concatenate([start, start + steps.cumsum(1)], axis=1))


def _rebuild(coords: torch.Tensor, j0: int) -> torch.Tensor:
    frames = frenet_frames(coords)
    theta, psi = chain_angles(coords)
    return build_chain(theta, psi, ref_index=j0, ref_position=coords[..., j0, :],
                       ref_frame=frames[..., j0, :, :], bond_lengths_a=bond_lengths(coords))


def test_frames_are_rotations_with_tangent_rows(rng):
    coords = _random_chain(rng, 3, 40)
    frames = frenet_frames(coords)
    eye = torch.eye(3, dtype=frames.dtype)
    assert torch.allclose(frames @ frames.transpose(-1, -2), eye.expand_as(frames), atol=1e-12)
    assert torch.allclose(torch.linalg.det(frames), torch.ones(3, 39, dtype=frames.dtype), atol=1e-12)
    tangents = (coords[:, 1:] - coords[:, :-1]) / 3.8
    assert torch.allclose(frames[..., 2, :], tangents, atol=1e-12)


def test_transfer_rotations_have_the_form_of_eq_a4(rng):
    coords = _random_chain(rng, 2, 30)
    frames = frenet_frames(coords)
    rotations = transfer_rotations(frames)
    theta, psi = angles_from_rotations(rotations)
    assert torch.allclose(rotation_from_angles(theta, psi), rotations, atol=1e-12)
    # bond angle = angle between consecutive tangents, torsion = angle between binormals
    t, b = frames[..., 2, :], frames[..., 1, :]
    assert torch.allclose(torch.cos(psi), (t[:, 1:] * t[:, :-1]).sum(-1), atol=1e-12)
    assert torch.allclose(torch.cos(theta), (b[:, 1:] * b[:, :-1]).sum(-1), atol=1e-12)
    assert torch.all(psi >= 0) and torch.all(psi <= np.pi)
    assert torch.allclose(theta[:, 0], torch.zeros(2, dtype=theta.dtype), atol=1e-12)  # b_0 = b_1


@pytest.mark.parametrize("j0", [0, 1, 112, 211, 212])
def test_adk_round_trip(adk_coords, j0):
    rebuilt = _rebuild(adk_coords, j0)
    err = torch.linalg.vector_norm(rebuilt - adk_coords, dim=-1)
    assert err.max() < 1e-4


def test_adk_round_trip_float32_single_chain(adk_coords):
    coords = adk_coords[7].float()
    rebuilt = _rebuild(coords, 112)
    assert rebuilt.dtype == torch.float32
    assert torch.linalg.vector_norm(rebuilt - coords, dim=-1).max() < 5e-3


@settings(max_examples=25, deadline=None)
@given(m=st.integers(3, 70), j0_frac=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_random_chain_round_trip(m, j0_frac, seed):
    coords = _random_chain(np.random.default_rng(seed), 2, m, bond=float(np.random.default_rng(seed).uniform(1, 5)))
    j0 = int(round(j0_frac * (m - 2)))
    rebuilt = _rebuild(coords, j0)
    assert torch.linalg.vector_norm(rebuilt - coords, dim=-1).max() < 1e-4


def test_collinear_bonds_still_round_trip():
    coords = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [3, 1, 0], [3, 1, 1], [4, 1, 1]],
                          dtype=torch.float64)
    frames = frenet_frames(coords)
    assert torch.allclose(frames @ frames.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(frames))
    assert torch.linalg.vector_norm(_rebuild(coords, 3) - coords, dim=-1).max() < 1e-10


def test_cumulative_rotations_matches_sequential_product(rng):
    rotations = torch.as_tensor(np.linalg.qr(rng.normal(size=(3, 37, 3, 3)))[0])
    expected = [rotations[:, 0]]
    for k in range(1, 37):
        expected.append(rotations[:, k] @ expected[-1])
    assert torch.allclose(cumulative_rotations(rotations), torch.stack(expected, 1), atol=1e-12)


def test_constant_angles_give_constant_bond_geometry():
    """A helix: constant (θ, ψ) ⇒ every bond angle and torsion equal, bonds of length δ."""
    theta = torch.full((48,), 0.9, dtype=torch.float64)
    psi = torch.full((48,), 1.1, dtype=torch.float64)
    coords = build_chain(theta, psi, ref_index=20, ref_position=torch.zeros(3, dtype=torch.float64),
                         ref_frame=torch.eye(3, dtype=torch.float64), bond_lengths_a=3.8)
    assert torch.allclose(bond_lengths(coords), torch.full((49,), 3.8, dtype=torch.float64))
    th, ps = chain_angles(coords)
    assert torch.allclose(ps, psi, atol=1e-10) and torch.allclose(th[1:], theta[1:], atol=1e-10)


def test_gradcheck_build_chain(rng):
    m, j0 = 9, 4
    theta = torch.as_tensor(rng.uniform(-np.pi, np.pi, size=(2, m - 2)), dtype=torch.float64).requires_grad_()
    psi = torch.as_tensor(rng.uniform(0.2, 2.5, size=(2, m - 2)), dtype=torch.float64).requires_grad_()
    position = torch.as_tensor(rng.normal(size=(2, 3)), dtype=torch.float64).requires_grad_()
    frame = torch.as_tensor(np.linalg.qr(rng.normal(size=(2, 3, 3)))[0], dtype=torch.float64).requires_grad_()
    delta = torch.as_tensor(rng.uniform(3, 4, size=(m - 1,)), dtype=torch.float64).requires_grad_()

    def chain(th, ps, pos, fr, dl):
        return build_chain(th, ps, ref_index=j0, ref_position=pos, ref_frame=fr, bond_lengths_a=dl)

    assert torch.autograd.gradcheck(chain, (theta, psi, position, frame, delta))


@pytest.mark.parametrize(
    ("coords", "match"),
    [
        (torch.zeros(2, 3), "at least 3 atoms"),
        (torch.zeros(5, 2), r"\(\.\.\., m, 3\)"),
        (torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 0, 0]]), "zero-length"),
        (torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), "straight line"),
    ],
)
def test_bad_chains_raise(coords, match):
    with pytest.raises(ValueError, match=match):
        frenet_frames(coords)


def test_bad_reference_index_raises():
    with pytest.raises(ValueError, match="ref_index"):
        build_chain(torch.zeros(5), torch.zeros(5), ref_index=6, ref_position=torch.zeros(3),
                    ref_frame=torch.eye(3), bond_lengths_a=3.8)
