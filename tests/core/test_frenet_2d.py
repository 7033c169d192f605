"""Planar discrete Frenet frames (eq. 3.1 of 000_8d73a95ce4c6e7ab.txt): round trips and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.frenet_2d import build_chain_2d, chain_angles_2d, chain_frames_2d


def test_gradcheck_build_chain_2d(rng):
    theta = torch.as_tensor(rng.uniform(-1, 1, size=(3, 8)), dtype=torch.float64).requires_grad_()
    position = torch.as_tensor(rng.normal(size=(3, 2)), dtype=torch.float64).requires_grad_()

    def chain(th, pos):
        return build_chain_2d(th, ref_index=3, ref_position=pos, ref_frame=torch.eye(2, dtype=torch.float64),
                              bond_lengths_a=3.5)

    assert torch.autograd.gradcheck(chain, (theta, position))


@pytest.mark.parametrize("j0", [0, 32, 147])
def test_2d_round_trip(rng, j0):
    steps = rng.normal(size=(4, 148, 2))
    steps *= 3.5 / np.linalg.norm(steps, axis=-1, keepdims=True)
    coords = torch.as_tensor(np.concatenate([np.zeros((4, 1, 2)), steps.cumsum(1)], 1))
    frames = chain_frames_2d(coords)
    assert torch.allclose(frames[..., 1, :], torch.as_tensor(steps / 3.5))  # e₂ F_j = t_j (eq. 3.1)
    theta = chain_angles_2d(coords)
    rebuilt = build_chain_2d(theta, ref_index=j0, ref_position=coords[:, j0], ref_frame=frames[:, j0],
                             bond_lengths_a=3.5)
    assert torch.linalg.vector_norm(rebuilt - coords, dim=-1).max() < 1e-4


def test_2d_square_has_right_angle_turns():
    side = [[0, 0], [0, 1], [0, 2], [1, 2], [2, 2], [2, 1], [2, 0], [1, 0]]
    theta = chain_angles_2d(torch.tensor(side, dtype=torch.float64))
    assert torch.allclose(theta.abs(), torch.tensor([0, np.pi / 2, 0, np.pi / 2, 0, np.pi / 2],
                                                    dtype=torch.float64), atol=1e-12)
