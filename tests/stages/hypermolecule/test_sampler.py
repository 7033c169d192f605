"""The hyper-molecule sampler stage (stages/hypermolecule/): state recovery on a small pretzel,
resume after a kill, weight sharing in the result, save/load, layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from napari_cryohet.core.hypermolecule_posterior import unflatten_params
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.hypermolecule import (
    C2_Z,
    DEFAULT_LAYOUTS,
    HyperMoleculeConfig,
    HyperMoleculeResult,
    layout_components,
    layout_symmetries,
    run_hypermolecule,
)
from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel


@pytest.fixture(scope="module")
def small_pretzel():
    """150 pretzel particles, 64 px at 3 Å, high SNR (1), CTF and shifts; known poses."""
    return pretzel(150, box_size=64, snr=1.0, seed=3)


def _known_pose_config(**kw) -> HyperMoleculeConfig:
    base = dict(estimate_poses=False, estimate_shifts=False, estimate_contrast=False, working_size_px=24,
                n_burnin_sweeps=12, n_sample_sweeps=6, theta_steps=2, output_size_px=24, tau_grid_size=3,
                volume_samples=3, device="cpu")
    base.update(kw)
    return HyperMoleculeConfig(**base)


@pytest.fixture(scope="module")
def known_pose_result(small_pretzel):
    torch.manual_seed(0)
    return run_hypermolecule(small_pretzel, _known_pose_config())


def test_recovers_arm_states_with_known_poses(small_pretzel, known_pose_result):
    """Poses, shifts and CTF known, map started from the mean truth volume (arms blurred):
    each arm's posterior-mean state ranks the true arm state, |Spearman ρ| ≥ 0.8 per arm."""
    truth = small_pretzel.ground_truth["state"]
    res = known_pose_result
    rho = [abs(spearmanr(res.tau_mean[:, k], truth[:, k])[0]) for k in range(2)]
    print(f"|Spearman ρ| per arm: {rho[0]:.3f}, {rho[1]:.3f}; acceptance {res.acceptance}")
    assert res.state_names == ["arm1", "arm2"]
    assert min(rho) >= 0.8
    assert 0.05 < res.acceptance["tau"] < 0.95 and 0.0 < res.acceptance["theta"] <= 1.0
    assert res.volumes_mean.shape == (9, 24, 24, 24) and res.volumes_std.shape == (9, 24, 24, 24)
    assert np.isfinite(res.traces["log_posterior"]).all()
    # frequency marching: the resolution grows within each burn-in segment and ends at Nyquist
    kmax = res.traces["max_frequency_per_a"][0]
    assert kmax[0] < kmax[5] and kmax[-1] == pytest.approx(1 / (2 * 8.0))


def test_weight_sharing_holds_in_the_result(known_pose_result):
    """The copy's blobs are the C₂ image of the source's, with equal masses, at every state
    (one coefficient tensor, θ has no entries for the copy), and the maps at (τ₁, τ₂) and
    (τ₂, τ₁) differ only by that rotation on the arms."""
    res = known_pose_result
    model = res.model()
    assert not any(k.startswith("arm2.") for k in model.parameter_shapes())
    params = unflatten_params(torch.as_tensor(res.theta_mean), model.parameter_shapes())
    rot = torch.tensor(C2_Z, dtype=torch.float64)
    k_base, k_arm = len(model.blob_centres("base")), len(model.blob_centres("arm1"))
    src, cpy = slice(k_base, k_base + k_arm), slice(k_base + k_arm, k_base + 2 * k_arm)
    worst = 0.0
    for t in (0.0, 0.3, 0.8):
        tau = torch.tensor([[t, t]], dtype=torch.float64)
        pos, mass = model.blobs(params, tau)
        assert torch.allclose(pos[cpy], pos[src] @ rot.T, atol=1e-9)
        worst = max(worst, float((mass[0, cpy] - mass[0, src]).abs().max()))
    print(f"largest mass difference between the shared arms: {worst:.1e}")
    assert worst < 1e-12
    for sample in res.theta_samples.reshape(-1, res.theta_samples.shape[-1]):  # every kept sample
        p = unflatten_params(torch.as_tensor(sample, dtype=torch.float64), model.parameter_shapes())
        _, m = model.blobs(p, torch.tensor([[0.2, 0.2]], dtype=torch.float64))
        assert torch.equal(m[0, cpy], m[0, src])


def test_result_round_trips(known_pose_result, tmp_path):
    res = known_pose_result
    res.save(tmp_path)
    back = HyperMoleculeResult.load(tmp_path)
    for key in ("indices", "tau_grid", "volumes_mean", "volumes_std", "tau_mean", "tau_std", "tau_mean_chains",
                "rotations", "shifts_a", "contrast", "theta_mean", "theta_samples"):
        np.testing.assert_array_equal(getattr(back, key), getattr(res, key), err_msg=key)
    assert back.traces.keys() == res.traces.keys()
    for key in res.traces:
        np.testing.assert_array_equal(back.traces[key], res.traces[key])
    assert back.config == res.config and back.layout == res.layout and back.acceptance == res.acceptance
    assert back.state_names == res.state_names and back.apix == res.apix
    np.testing.assert_allclose(back.volume_at([[0.5, 0.5]]), res.volume_at([[0.5, 0.5]]))
    assert back.volumes_by_knob().shape == (3, 3, 24, 24, 24)
    np.testing.assert_array_equal(back.embedding().values, res.tau_mean)


def test_resume_after_a_kill_continues_the_same_chains(small_pretzel, tmp_path):
    """Two chains, every particle variable sampled (the global pose search and a pose-only
    sweep included): a run cancelled after sweep 2 and resumed from its checkpoint ends in
    exactly the state of an uninterrupted run."""
    ds = small_pretzel.subset(np.arange(24))
    cfg = HyperMoleculeConfig(working_size_px=16, n_burnin_sweeps=3, n_sample_sweeps=2, n_chains=2, theta_steps=1,
                              tau_steps=1, pose_steps=1, shift_steps=1, output_size_px=12, tau_grid_size=2,
                              volume_samples=2, device="cpu", batch_size=16, initial_map="zero",
                              pose_search_candidates=40, pose_only_sweeps=1)
    straight = run_hypermolecule(ds, cfg, run_dir=tmp_path / "straight")
    token = CancelToken()

    def progress(fraction, message):
        if message.startswith("burn-in sweep 2/"):
            token.cancel()

    with pytest.raises(Cancelled):
        run_hypermolecule(ds, cfg, run_dir=tmp_path / "killed", progress=progress, cancel=token)
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["state"]["epoch"] == 2
    resumed = run_hypermolecule(ds, cfg, run_dir=tmp_path / "killed")
    for key in ("tau_mean_chains", "rotations", "shifts_a", "contrast", "theta_samples", "volumes_mean"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(straight, key), err_msg=key)
    for key in straight.traces:
        np.testing.assert_array_equal(resumed.traces[key], straight.traces[key], err_msg=key)
    assert straight.traces["log_posterior"].shape == (2, 5)
    assert not np.array_equal(straight.tau_mean_chains[0], straight.tau_mean_chains[1])  # own streams


def test_global_pose_search_climbs_the_pose_posterior_from_a_random_start(small_pretzel):
    """SNR 1, poses Haar-random at the start, the map kept at the starting map (pose-only
    sweeps): the global pose search raises the particles' log posterior far above what the
    local steps reach alone (≥ 20 nats per particle more), and moves a fraction of particles
    strictly between 0 and 1 in the sampling sweep. (The starting map is the mean of the true
    volumes, arms blurred, whose near-symmetries make some wrong poses fit it better than the
    true ones: the rotation error is not the oracle here, the posterior it samples is.)"""
    ds = small_pretzel.subset(np.arange(32))
    base = dict(working_size_px=16, n_burnin_sweeps=3, n_sample_sweeps=1, pose_only_sweeps=3, initial_poses="random",
                estimate_shifts=False, estimate_contrast=False, start_resolution_a=16.0, pose_steps=2,
                output_size_px=12, tau_grid_size=2, volume_samples=1, device="cpu")
    found = run_hypermolecule(ds, HyperMoleculeConfig(**base, pose_search_candidates=1000))
    lost = run_hypermolecule(ds, HyperMoleculeConfig(**base, pose_search_candidates=0))
    after = [float(r.traces["log_posterior"][0][2]) / len(ds) for r in (found, lost)]  # last pose-only sweep
    print(f"particles' log posterior per particle after 3 pose-only sweeps: {after[0]:.1f} with the global "
          f"search, {after[1]:.1f} without; acceptance {found.acceptance}")
    assert after[0] > after[1] + 20.0
    assert 0.0 < found.acceptance["pose_search"] < 1.0


def test_crude_mode_updates_a_subset_and_steps_the_map(small_pretzel):
    ds = small_pretzel.subset(np.arange(40))
    cfg = HyperMoleculeConfig(working_size_px=16, n_burnin_sweeps=2, n_sample_sweeps=1, theta_update="crude",
                              crude_fraction=0.25, output_size_px=16, tau_grid_size=2, volume_samples=1,
                              estimate_poses=False, device="cpu")
    res = run_hypermolecule(ds, cfg)
    assert "theta" not in res.acceptance and res.acceptance["tau"] > 0
    assert np.isfinite(res.volumes_mean).all()


def test_layouts_are_checked_by_name():
    comps = layout_components(DEFAULT_LAYOUTS["pretzel"])
    assert [c.name for c in comps] == ["base", "arm1", "arm2"] and comps[2].copy_of == "arm1"
    with pytest.raises(ValueError, match="component 'arm1'.*radius_a"):
        layout_components({"components": [{"name": "arm1", "radius_a": -3}]})
    with pytest.raises(ValueError, match="unknown key.*'centre'"):
        layout_components({"components": [{"name": "a", "centre": [0, 0, 0]}]})
    with pytest.raises(ValueError, match="HyperMoleculeConfig.layout"):
        HyperMoleculeConfig(layout="pretzle")
    with pytest.raises(ValueError, match="HyperMoleculeConfig.initial_poses"):
        HyperMoleculeConfig(estimate_poses=False, initial_poses="random")
    cfg = HyperMoleculeConfig(regions=DEFAULT_LAYOUTS["cat"])
    assert HyperMoleculeConfig.from_dict(cfg.to_dict()) == cfg


def test_auto_layout_of_a_pretzel_read_back_from_a_workspace(tmp_path):
    """layout="auto" gives the pretzel's regions also when the simulated dataset comes back from
    a workspace, whose meta keeps the recipe but not the name (it used to fall back to one ball)."""
    from napari_cryohet.stages.hypermolecule.config import DEFAULT_LAYOUTS, default_layout
    from napari_cryohet.stages.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws", {"recipe": "pretzel", "args": {"n_particles": 8, "box_size": 32}})
    reopened = Workspace.open(tmp_path / "ws").dataset
    assert default_layout(reopened) == DEFAULT_LAYOUTS["pretzel"]
    assert ws.info["source"]["recipe"] == "pretzel"


def test_joint_pose_search_candidates_are_the_maps_projections_at_their_states():
    """The joint (orientation × states) search scores candidate ``m·S + s`` with the spectrum
    of the map at orientation ``m`` and grid state ``s``: each equals the likelihood's own
    projection (``projection_spectra``, through ``HyperMolecule.project``) at that pose and
    state on the search crop, to float precision; the grid is stratified (one point per cell
    of each knob) and different next sweep; the current-pose surrogate is the same
    projection at the particle's own state."""
    from napari_cryohet.core.hypermolecule import HyperMolecule
    from napari_cryohet.core.hypermolecule_posterior import (
        ImageData,
        ParticleVariables,
        projection_spectra,
    )
    from napari_cryohet.core.rotation import random_rotations
    from napari_cryohet.stages.hypermolecule.sampler import HyperMoleculeSampler

    gen = torch.Generator().manual_seed(5)
    d, apix, n = 16, 12.0, 6
    comps = layout_components(DEFAULT_LAYOUTS["pretzel"], source="test")
    model = HyperMolecule(comps, spacing_a=apix, sigma_a=1.5 * apix, device="cpu", dtype=torch.float64)
    theta0 = torch.randn(sum(int(np.prod(s)) for s in model.parameter_shapes().values()), generator=gen,
                         dtype=torch.float64)
    data = ImageData.from_images(torch.randn(n, d, d, generator=gen, dtype=torch.float64), apix=apix)
    part0 = ParticleVariables(torch.rand(n, 2, generator=gen, dtype=torch.float64),
                              random_rotations(n, generator=gen, dtype=torch.float64),
                              torch.zeros(n, 2, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
    cfg = HyperMoleculeConfig(pose_search_candidates=5, pose_search_states=3, pose_search_resolution_a=30.0,
                              n_burnin_sweeps=4, n_sample_sweeps=1, device="cpu")
    sampler = HyperMoleculeSampler(model, data, cfg, theta0=theta0, particles0=part0, volume_size_px=d,
                                   volume_apix=apix)
    chain = sampler.chains[0]
    params = unflatten_params(chain["theta"], sampler.shapes)
    search = sampler._pose_search_setup(chain, params, sampler.plan(3))
    crop = search["crop"]
    assert search["rotations"].shape[0] == search["tau"].shape[0] == 5 * 9
    grid = search["tau"][:9]
    for k in range(2):  # one point in each third of each knob
        assert sorted(int(i) for i in torch.unique(torch.floor(grid[:, k] * 3))) == [0, 1, 2]
    oracle = projection_spectra(model, params, search["tau"], search["rotations"], d=d, apix=apix)
    oracle = oracle[(..., *crop)].reshape(oracle.shape[0], -1)
    np.testing.assert_allclose(search["re"].numpy(), oracle.real.numpy(), atol=1e-10 * float(oracle.abs().max()))
    np.testing.assert_allclose(search["im"].numpy(), oracle.imag.numpy(), atol=1e-10 * float(oracle.abs().max()))
    current = sampler._current_search_spectra(search, part0)
    own = projection_spectra(model, params, part0.tau, part0.rotations, d=d, apix=apix)[(..., *crop)]
    np.testing.assert_allclose(current.numpy(), own.reshape(n, -1).numpy(), atol=1e-10 * float(own.abs().max()))
    again = sampler._pose_search_setup(chain, params, sampler.plan(3))
    assert not torch.equal(again["tau"][:9], grid)  # a fresh grid offset (and orientations) each sweep
    averaged = sampler._pose_search_setup(chain, params, sampler.plan(3), states=False)
    assert averaged["tau"] is None and averaged["rotations"].shape[0] == 5


def test_joint_pose_search_finds_poses_and_states_together(small_pretzel):
    """SNR 1, orientations Haar-random and states uniform at the start, the true mean map:
    after a pose-only sweep and four full sweeps (three of burn-in, one of sampling),
    searching orientations × states (4 per knob) leaves the particles at a log posterior
    ≥ 10 nats per particle above the search through one state-averaged map (a particle whose
    arms are wrong no longer has to find its orientation against a blurred map first)."""
    ds = small_pretzel.subset(np.arange(32))
    base = dict(working_size_px=16, n_burnin_sweeps=4, n_sample_sweeps=1, pose_only_sweeps=1,
                initial_poses="random", estimate_shifts=False, estimate_contrast=False, start_resolution_a=16.0,
                pose_steps=2, theta_steps=1, pose_search_candidates=300, output_size_px=12, tau_grid_size=2,
                volume_samples=1, device="cpu")
    joint = run_hypermolecule(ds, HyperMoleculeConfig(**base, pose_search_states=4))
    averaged = run_hypermolecule(ds, HyperMoleculeConfig(**base, pose_search_states=0))
    after = [float(r.traces["log_posterior"][0][-1]) / len(ds) for r in (joint, averaged)]
    print(f"log posterior per particle after 5 sweeps: {after[0]:.1f} joint, {after[1]:.1f} state-averaged; "
          f"pose search acceptance {joint.acceptance['pose_search']:.2f} / {averaged.acceptance['pose_search']:.2f}")
    assert after[0] > after[1] + 10.0


def test_states_are_averaged_in_one_frame_across_the_pretzels_symmetries():
    """The pretzel layout declares the simulator's four symmetries (``pretzel_symmetries``:
    an image at pose R and states τ is the image at R g and σ(τ)). A particle whose chain sits
    at ``F g`` (up to a small turn) has its states carried to the frame ``F`` by σ_g, so a
    chain that alternates between equivalent poses keeps its states' posterior mean instead
    of averaging τ with its mirror 1 − τ or the other arm's state."""
    from napari_cryohet.core.hypermolecule import HyperMolecule
    from napari_cryohet.core.hypermolecule_posterior import ImageData, ParticleVariables
    from napari_cryohet.core.local_refine import axis_angle_to_matrix
    from napari_cryohet.core.rotation import random_rotations
    from napari_cryohet.stages.hypermolecule.sampler import HyperMoleculeSampler
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_symmetries

    gen = torch.Generator().manual_seed(2)
    n, d, apix = 40, 16, 12.0
    layout = DEFAULT_LAYOUTS["pretzel"]
    symmetries = layout_symmetries(layout)
    assert len(symmetries) == 3
    model = HyperMolecule(layout_components(layout, source="test"), spacing_a=apix, sigma_a=1.5 * apix,
                          device="cpu", dtype=torch.float64)
    theta0 = torch.zeros(sum(int(np.prod(s)) for s in model.parameter_shapes().values()), dtype=torch.float64)
    frame = random_rotations(n, generator=gen, dtype=torch.float64)
    tau = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    part0 = ParticleVariables(tau, frame, torch.zeros(n, 2, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
    images = torch.randn(n, d, d, generator=gen, dtype=torch.float64)
    sampler = HyperMoleculeSampler(model, ImageData.from_images(images, apix=apix),
                                   HyperMoleculeConfig(device="cpu"), theta0=theta0, particles0=part0,
                                   volume_size_px=d, volume_apix=apix, symmetries=symmetries)
    wobble = axis_angle_to_matrix(0.1 * torch.randn(n, 3, generator=gen, dtype=torch.float64))  # ≈ 8° turns
    for g, reverse, swap in pretzel_symmetries():  # the simulator's own statement of the symmetries
        g = torch.as_tensor(g, dtype=torch.float64)
        at_mate = frame @ g @ wobble
        mapped = tau.flip(1) if swap else tau
        mapped = 1.0 - mapped if reverse else mapped
        # (F g, τ) is the image (F, σ(τ)): a draw at the mate with states σ(τ) reads τ in F's frame
        np.testing.assert_allclose(sampler._in_frame(at_mate, mapped, frame).numpy(), tau.numpy(), atol=1e-12)
    # a chain alternating between F (states τ) and F g_z (states swapped): the mean is τ, not the arms' average
    chain = sampler.chains[0]
    chain["tau_frame"] = frame.clone()
    swap_z = torch.as_tensor(pretzel_symmetries()[1][0], dtype=torch.float64)
    for rot, t in ((frame, tau), (frame @ swap_z, tau.flip(1)), (frame, tau)):
        t = sampler._in_frame(rot, t, chain["tau_frame"])
        chain["tau_sum"] += t
        chain["tau_sq"] += t.square()
        chain["n_kept"] += 1
    chain["particles"].rotations = frame @ swap_z  # reported at the mate: the mean is given in its frame
    mean, std = sampler.tau_moments(0)
    np.testing.assert_allclose(mean.numpy(), tau.flip(1).numpy(), atol=1e-12)
    assert float(std.abs().max()) < 1e-6


def test_layout_symmetries_are_checked():
    base = {"components": [{"name": "a", "state_dim": 1}, {"name": "b", "state_dim": 1}]}
    good = {**base, "symmetries": [{"rotation": C2_Z, "states_from": ["b", "a"], "reversed": [True, True]}]}
    (g, cols, rev), = layout_symmetries(good)
    assert cols == [1, 0] and rev == [True, True]
    quarter = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    for bad, match in (({"rotation": quarter, "states_from": ["a", "b"], "reversed": [False, False]}, "half turns"),
                       ({"rotation": C2_Z, "states_from": ["a", "a"], "reversed": [False, False]}, "each knob"),
                       ({"rotation": C2_Z, "states_from": ["b", "a"], "reversed": [True, False]}, "undo itself"),
                       ({"rotation": C2_Z}, "states_from")):
        with pytest.raises(ValueError, match=match):
            HyperMoleculeConfig(regions={**base, "symmetries": [bad]}).validate()
