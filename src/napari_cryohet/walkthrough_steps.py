"""The guided walkthrough as data: its steps, their settings, their headline figures against the truth.

One session from a simulated particle stack to results, the way ``cryohet demo`` (``make
demo``) and the napari *Walkthrough* dock (``plugin/walkthrough.py``) both show it:

======================  ==============================================  ==========================================
step                    paper                                           headline against the ground truth
======================  ==============================================  ==========================================
``simulate``            Esteve-Yagüe et al. 2022, §3.2                  measured SNR of the stack vs the recipe's
``spectral``            Esteve-Yagüe et al. 2022, §2.2                  |corr| of eigenvector 1 with the true
                                                                        open–closed position
``chainfit``            Esteve-Yagüe et al. 2022, eq. 2.6               mean Cα error (Å) vs the true chains
``vae``                 Kimanius, Jamali & Scheres 2022                 best |Spearman ρ| of a latent with the
                                                                        true position
``refine``              Silvera Coeff 2025, §4.1                        ARI of the clusters vs the true open /
                                                                        closed halves
``hypermolecule``       Lederman, Andén & Singer 2020, §3.1.2           smaller |Spearman ρ| of the two arms'
                                                                        states (pretzel toy)
``truth_check``         —                                               every stage's check, passed or not
======================  ==============================================  ==========================================

Each :class:`Step` carries what a user reads (what the stage does, what to look at, what a
good result looks like), its settings at two sizes (``"laptop"``: the whole walkthrough in a
few minutes on a 2-core laptop CPU; ``"tiny"``: seconds, for tests), and the rule its
headline figure is checked by. :class:`Walkthrough` runs the steps on one workspace
folder through :mod:`napari_cryohet.api` (the hyper-molecule toy in a second one: it is
another dataset). The hyper-molecule step is offered only when the stage
``"hypermolecule"`` is registered (looked up when the walkthrough is made); otherwise it is
skipped and says so.

This module sits beside ``api.py`` in the outer ring and never imports napari or Qt: the
dock and the headless command draw the results (``present``) and take the screenshots.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Step", "STEPS", "SIZES", "Walkthrough", "StepRecord", "available_steps", "write_summary",
           "parse_settings", "format_settings"]

#: The sizes the walkthrough runs at: ``"laptop"`` (the demo) and ``"tiny"`` (tests, seconds).
SIZES = ("laptop", "tiny")

Progress = Callable[[float, str], None]


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the walkthrough: what it says, how it runs, how its result is judged.

    Attributes
    ----------
    name
        The stage name (``"spectral"``), or ``"truth_check"`` for the last step.
    title, paper
        Shown as the step's heading; the paper by author and year.
    widget
        The ``display_name`` of the stage's own dock in napari.yaml (opened beside the
        walkthrough so its settings can be changed); ``None``: none.
    does, look_at, good
        What the stage does, what to look at in the window, what a good result looks like.
    metric
        The headline figure's name, with its unit.
    comparison, threshold
        The truth check: ``value >= threshold`` (``">="``) or ``value <= threshold`` (``"<="``).
    settings
        Size (``"laptop"``, ``"tiny"``) → the stage's settings (its config's fields).
    """

    name: str
    title: str
    paper: str
    widget: str | None
    does: str
    look_at: str
    good: str
    metric: str
    comparison: str
    threshold: float
    settings: dict[str, dict[str, Any]]

    def check(self, value: float) -> bool:
        """``True`` when ``value`` passes the truth check (NaN never does)."""
        if not np.isfinite(value):
            return False
        return bool(value >= self.threshold) if self.comparison == ">=" else bool(value <= self.threshold)

    def rule(self) -> str:
        return f"{self.comparison} {self.threshold:g}"


STEPS: tuple[Step, ...] = (
    Step(
        name="simulate",
        title="1 · Simulate particles with a known answer",
        paper="Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022, §3.2",
        widget="1 · Particle stack viewer",
        does="Adenylate kinase (AdK) Cα chains are taken along its closed → open trajectory (102 frames); "
             "each particle gets one frame, a random orientation, a defocus between 1.5 and 2.5 µm, the "
             "microscope's contrast transfer function (200 kV) and Gaussian noise. Every particle's true "
             "frame and atoms are kept, so every later step can be checked.",
        look_at="The particle stack: scroll the 'particle' slider. The images are mostly noise; the "
                "stack viewer's table lists each particle's defocus and its true frame.",
        good="Noise as strong as requested: the measured signal-to-noise ratio (variance of the clean "
             "image / variance of the noise) is within 20 % of the recipe's.",
        metric="|measured SNR / requested SNR − 1|",
        comparison="<=", threshold=0.2,  # |ratio - 1|
        settings={"laptop": dict(recipe="adk_chain", n_particles=600, box_size=48, apix=2.67, snr=0.5, seed=0),
                  "tiny": dict(recipe="adk_chain", n_particles=60, box_size=32, apix=4.0, snr=0.05, seed=0)},
    ),
    Step(
        name="spectral",
        title="2 · Spectral embedding: order the particles by shape",
        paper="Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022, §2.2 and App. B",
        widget="2 · Spectral embedding (Esteve-Yagüe et al. 2022)",
        does="Each particle is described by a low-resolution density (as in the paper: simulated data "
             "only; 'pca_images' is the choice for real data), particles are joined to their nearest "
             "neighbours in a graph, and the graph Laplacian's first eigenvectors give each particle a "
             "few coordinates that change slowly from one shape to the next.",
        look_at="The 3D point cloud (eigenvectors 1, 2, 3), coloured by the true frame: the colours "
                "should run smoothly along a curve.",
        good="Eigenvector 1 follows the open–closed motion: |correlation| with the true position "
             "along the trajectory of 0.7 or more.",
        metric="|corr| of eigenvector 1 with the true trajectory position",
        comparison=">=", threshold=0.7,
        settings={"laptop": dict(n_eigenvectors=6),
                  "tiny": dict(n_components=10, k=10, n_eigenvectors=4)},
    ),
    Step(
        name="chainfit",
        title="3 · Fit a backbone chain to every particle",
        paper="Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022, eq. 2.6 and App. A",
        widget="3 · Backbone chain fit (Esteve-Yagüe et al. 2022)",
        does="Starting from one known conformation (frame 0), each particle's torsion and bond angles "
             "are written as Θ_i = Θ₀ + A Φ_i, a shared matrix A times its eigenvectors Φ_i. A is fitted "
             "so that the chains, projected like the particles, match the images.",
        look_at="One particle's fitted chain (and the true one, in another colour) in 3D, with its image "
                "and the fit's projection. Move the particle slider of the chain-fit dock.",
        good="Chains closer to the truth than the starting point: a mean Cα error of 2.5 Å or less (frame 0 "
             "itself, where the fit starts, is 3.3 Å from the average frame, 5.0 Å from the open end).",
        metric="mean Cα error vs the true chains (Å)",
        comparison="<=", threshold=2.5,
        settings={"laptop": dict(n_eigenvectors=6, epochs=15),
                  "tiny": dict(n_eigenvectors=4, epochs=2, batch_size=30)},
    ),
    Step(
        name="vae",
        title="4 · Learn a latent space with a VAE",
        paper="Kimanius, Jamali & Scheres 2022, eq. 3–5",
        widget="4 · VAE and latent space (Kimanius, Jamali & Scheres 2022)",
        does="An encoder maps each image to a few latent numbers; a decoder turns them into a volume as "
             "a weighted sum of basis volumes (the structural basis), projected with each particle's "
             "pose and CTF and compared with its image.",
        look_at="The latent points coloured by the true frame; click a point in the VAE dock to decode "
                "its volume.",
        good="One latent direction follows the motion: a |Spearman ρ| of 0.5 or more between a latent "
             "coordinate and the true position.",
        metric="best |Spearman ρ| of a latent coordinate with the true trajectory position",
        comparison=">=", threshold=0.5,
        settings={"laptop": dict(epochs=20, zdim=2, n_basis=8, batch_size=32),
                  "tiny": dict(epochs=1, zdim=2, n_basis=4, enc_dim=32, enc_blocks=1, dec_dim=16, dec_blocks=1,
                               normalisation_images=32, batch_size=30)},
    ),
    Step(
        name="refine",
        title="5 · Cluster the particles and reconstruct each cluster",
        paper="Silvera Coeff 2025, §4.1",
        widget="5 · Clustering and refinement (Silvera Coeff 2025)",
        does="The particles' vectors from an earlier step (here the spectral eigenvectors; set "
             "embedding='vae' to cluster the VAE latents instead) are clustered (k-means); each cluster's "
             "particles are reconstructed from their images into half maps, whose Fourier shell correlation "
             "gives the cluster's resolution.",
        look_at="The cluster maps side by side and the input points coloured by cluster; the dock plots "
                "each cluster's FSC curve.",
        good="The clusters split the particles into their closed and open halves: an adjusted Rand "
             "index (ARI) of 0.2 or more against the true halves (0: no better than chance, 1: exact).",
        metric="ARI of the clusters vs the true closed / open halves",
        comparison=">=", threshold=0.2,
        settings={"laptop": dict(embedding="spectral", n_clusters=2, n_iterations=1, refine_poses=False,
                                 device="cpu"),
                  "tiny": dict(embedding="spectral", n_clusters=2, n_iterations=1, refine_poses=False, min_cluster_size=5,
                               embedding_method="none", device="cpu")},
    ),
    Step(
        name="hypermolecule",
        title="6 · A hyper-molecule: a volume with a state knob",
        paper="Lederman, Andén & Singer 2020, §3.1.2",
        widget="7 · Hyper-molecule sampler (Lederman, Andén & Singer 2020)",
        does="A new toy, the pretzel: a rigid base with two arms that move independently. The sampler "
             "fits one volume V(r, τ) with a state τ per arm and draws, by Markov chain Monte Carlo, "
             "each particle's state (poses known here, to keep it short).",
        look_at="The map at the sliders' states: move each knob from 0 to 1 and watch its arm swing.",
        good="Each particle's state found again: |Spearman ρ| between the sampled and the true state of "
             "each arm of 0.3 or more in this short run (longer runs reach 0.9).",
        metric="smaller |Spearman ρ| of the two arms' states vs the truth",
        comparison=">=", threshold=0.3,
        settings={"laptop": dict(recipe="pretzel", n_particles=400, box_size=48, apix=3.0, snr=1 / 30,
                                 layout="pretzel", working_size_px=16, n_burnin_sweeps=20, n_sample_sweeps=6,
                                 theta_steps=2, estimate_poses=False, estimate_shifts=False,
                                 estimate_contrast=False, initial_poses="dataset", initial_map="truth",
                                 output_size_px=24, volume_samples=3, device="cpu"),
                  "tiny": dict(recipe="pretzel", n_particles=40, box_size=32, apix=4.5, snr=1 / 30,
                               layout="pretzel", working_size_px=16, n_burnin_sweeps=1, n_sample_sweeps=1, theta_steps=1,
                               estimate_poses=False, estimate_shifts=False, estimate_contrast=False,
                               initial_poses="dataset", initial_map="truth", output_size_px=16,
                               tau_grid_size=2, volume_samples=2, device="cpu")},
    ),
    Step(
        name="truth_check",
        title="7 · Check every result against the ground truth",
        paper="",
        widget=None,
        does="Every step's headline figure is compared with the simulation's ground truth and its "
             "threshold; this step says which passed.",
        look_at="The table in this dock: one line per stage, its figure, its rule, passed or not.",
        good="Every stage passes. A failed check is a lesson too: change that step's settings, reset it "
             "and run it again.",
        metric="stages passing their truth check",
        comparison=">=", threshold=1.0,  # fraction of the checked stages
        settings={"laptop": {}, "tiny": {}},
    ),
)

#: Settings of the simulated dataset (not the stage's config fields) in the pretzel step.
_PRETZEL_DATA = ("recipe", "n_particles", "box_size", "apix", "snr")


def available_steps() -> tuple[Step, ...]:
    """:data:`STEPS`; the hyper-molecule step only when its stage is registered now."""
    return STEPS


def hypermolecule_available() -> bool:
    """Whether ``stage_spec("hypermolecule")`` exists in this version (looked up now)."""
    from napari_cryohet.stages.registry import stage_spec

    try:
        stage_spec("hypermolecule")
    except Exception:  # an unknown stage: KeyError or the registry's own error
        return False
    return True


def parse_settings(text: str) -> dict[str, Any]:
    """``"epochs=8, zdim=2"`` → ``{"epochs": 8, "zdim": 2}`` (values as Python literals; else strings)."""
    import ast

    out: dict[str, Any] = {}
    for part in _split_top_level(text):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"settings: {part.strip()!r} is not name=value (e.g. epochs=8)")
        name, value = part.split("=", 1)
        try:
            out[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[name.strip()] = value.strip()
    return out


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def format_settings(settings: dict[str, Any]) -> str:
    """The inverse of :func:`parse_settings`."""
    return ", ".join(f"{k}={v!r}" for k, v in settings.items())


@dataclasses.dataclass
class StepRecord:
    """What running a step gave: its result, seconds, headline and (when taken) screenshot."""

    name: str
    seconds: float = float("nan")
    value: float = float("nan")
    passed: bool | None = None
    detail: str = ""
    screenshot: str | None = None
    skipped: str | None = None
    result: Any = None

    def summary(self, step: Step) -> dict[str, Any]:
        """The entry of ``summary.json``'s ``stages`` list."""
        return {
            "name": self.name, "title": step.title, "paper": step.paper,
            "seconds": None if not np.isfinite(self.seconds) else round(float(self.seconds), 2),
            "screenshot": self.screenshot, "skipped": self.skipped,
            "headline": {"metric": step.metric,
                         "value": None if not np.isfinite(self.value) else round(float(self.value), 4),
                         "truth_check": {"passed": self.passed, "rule": step.rule(), "detail": self.detail}},
        }


class Walkthrough:
    """The walkthrough's state: its folder, its size, each step's settings and record.

    Parameters
    ----------
    folder
        Where the workspaces go: ``folder/workspace`` (AdK) and ``folder/workspace_pretzel``.
    size
        ``"laptop"`` or ``"tiny"`` (:data:`SIZES`).
    steps
        Default: :func:`available_steps`.
    """

    def __init__(self, folder: str | Path, *, size: str = "laptop", steps: tuple[Step, ...] | None = None):
        if size not in SIZES:
            raise ValueError(f"walkthrough size {size!r}: expected one of {', '.join(SIZES)}")
        self.folder = Path(folder)
        self.size = size
        self.steps = tuple(steps if steps is not None else available_steps())
        self.settings = {s.name: dict(s.settings[size]) for s in self.steps}
        self.records: dict[str, StepRecord] = {s.name: StepRecord(s.name) for s in self.steps}
        self.has_hypermolecule = hypermolecule_available()
        if not self.has_hypermolecule:
            self.records["hypermolecule"].skipped = ("the hyper-molecule sampler is not part of this version "
                                                     "(no stage 'hypermolecule' registered)")

    @property
    def workspace(self) -> Path:
        return self.folder / "workspace"

    @property
    def pretzel_workspace(self) -> Path:
        return self.folder / "workspace_pretzel"

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"walkthrough: no step {name!r} (steps: {', '.join(s.name for s in self.steps)})")

    def workspace_of(self, name: str) -> Path:
        """The workspace folder a step's result lives in."""
        return self.pretzel_workspace if name == "hypermolecule" else self.workspace

    def reset(self, name: str) -> None:
        """Forget the step's result and headline (its settings stay, to be changed and rerun)."""
        skipped = self.records[name].skipped
        self.records[name] = StepRecord(name, skipped=skipped)

    def missing_before(self, name: str) -> list[str]:
        """Earlier AdK steps that the step needs and that have not run."""
        order = ["simulate", "spectral", "chainfit", "vae", "refine"]
        refine_on = str(self.settings.get("refine", {}).get("embedding", "spectral"))
        needs = {"spectral": order[:1], "chainfit": order[:2], "vae": order[:1],
                 "refine": ["simulate", refine_on if refine_on in ("spectral", "vae") else "spectral"],
                 "truth_check": []}.get(name, [])
        return [n for n in needs if self.records[n].result is None]

    # ------------------------------------------------------------------ running
    def run(self, name: str, progress: Progress | None = None) -> StepRecord:
        """Run one step (no viewer: the caller draws), compute its headline, return its record."""
        progress = progress or (lambda f, m="": None)
        record = self.records[name]
        if record.skipped:
            progress(1.0, f"{name}: skipped ({record.skipped})")
            return record
        missing = self.missing_before(name)
        if missing:
            raise ValueError(f"walkthrough step {name!r} needs the result of {', '.join(missing)} first: "
                             "run the steps in order")
        t0 = time.perf_counter()
        result = getattr(self, f"_run_{name}")(dict(self.settings[name]), progress)
        record = StepRecord(name, seconds=time.perf_counter() - t0, result=result)
        record.value, record.detail = getattr(self, f"_headline_{name}")(result)
        record.passed = self.step(name).check(record.value)
        self.records[name] = record
        progress(1.0, f"{name}: {self.step(name).metric} = {record.value:.3g} "
                      f"({'passed' if record.passed else 'failed'}: {self.step(name).rule()})")
        return record

    def _run_simulate(self, settings: dict[str, Any], progress: Progress) -> Any:
        from napari_cryohet import api

        return api.simulate(self.workspace, None, progress=progress, **settings)

    def _run_spectral(self, settings: dict[str, Any], progress: Progress) -> Any:
        from napari_cryohet import api

        return api.spectral(self.workspace, None, progress=progress, **settings)

    def _run_chainfit(self, settings: dict[str, Any], progress: Progress) -> Any:
        from napari_cryohet import api

        return api.chainfit(self.workspace, None, eigenvectors=self.records["spectral"].result.run_id,
                            progress=progress, **settings)

    def _run_vae(self, settings: dict[str, Any], progress: Progress) -> Any:
        from napari_cryohet import api

        return api.vae(self.workspace, None, progress=progress, **settings)

    def _run_refine(self, settings: dict[str, Any], progress: Progress) -> Any:
        from napari_cryohet import api

        on = str(settings.pop("embedding", "spectral"))
        run_id = self.records[on].result.run_id if on in ("spectral", "vae") else on  # a step, or a run id
        return api.refine(self.workspace, None, embedding=run_id, progress=progress, **settings)

    def _run_hypermolecule(self, settings: dict[str, Any], progress: Progress) -> Any:
        from napari_cryohet import api

        data = {k: settings.pop(k) for k in _PRETZEL_DATA if k in settings}
        recipe = data.pop("recipe", "pretzel")
        n = data.pop("n_particles", 400)
        progress(0.0, f"simulating {n} pretzel particles")
        self._pretzel = api.simulate(self.pretzel_workspace, None, recipe=recipe, n_particles=n, **data).dataset
        return api.hypermolecule(self.pretzel_workspace, None, progress=progress, **settings)

    def _run_truth_check(self, settings: dict[str, Any], progress: Progress) -> Any:
        return {n: r.passed for n, r in self.records.items() if n != "truth_check" and not r.skipped}

    # ------------------------------------------------------------------ headlines
    def _dataset(self) -> Any:
        return self.records["simulate"].result.dataset

    def _position(self, rows: Any) -> np.ndarray:
        """True position along the trajectory ``t`` ∈ [0, 1] of the particles ``rows`` (root indices)."""
        ds = self._dataset()
        t = np.asarray(ds.ground_truth["state_params"], dtype=np.float64)[:, 0]
        lookup = {int(i): k for k, i in enumerate(np.asarray(ds.indices))}
        return t[[lookup[int(i)] for i in np.asarray(rows)]]

    def _headline_simulate(self, result: Any) -> tuple[float, str]:
        ds = result.dataset
        n = min(len(ds), 200)
        clean = np.asarray(ds.ground_truth["clean_images"][:n], dtype=np.float64)
        noisy = np.asarray(ds.get_images(np.arange(n)), dtype=np.float64)
        measured = float(clean.var() / (noisy - clean).var())
        requested = float(np.asarray(ds.ground_truth.get("global/snr", self.settings["simulate"].get("snr"))))
        return abs(measured / requested - 1.0), (f"{len(ds)} particles of {ds.box_size} px; SNR measured "
                                                 f"{measured:.4f}, requested {requested:.4f}")

    def _headline_spectral(self, result: Any) -> tuple[float, str]:
        ds = self._dataset()
        phi = result.embedding().aligned_to(ds)
        t = self._position(ds.indices)
        corr = float(abs(np.corrcoef(phi[:, 1], t)[0, 1]))
        return corr, f"{phi.shape[1]} eigenvectors of {len(phi)} particles"

    def _headline_chainfit(self, result: Any) -> tuple[float, str]:
        last = result.history[-1]
        err = float(last.get("avg_error_a", float("nan")))
        return err, f"after {len(result.history)} epochs"

    def _headline_vae(self, result: Any) -> tuple[float, str]:
        from scipy.stats import spearmanr

        emb = result.embedding()
        z = np.asarray(emb.values, dtype=np.float64)
        t = self._position(emb.indices)
        rhos = [abs(float(spearmanr(z[:, k], t).statistic)) for k in range(z.shape[1])]
        best = int(np.nanargmax(rhos))
        return float(rhos[best]), f"latent {best} of {z.shape[1]}; per latent " + ", ".join(f"{r:.2f}" for r in rhos)

    def _headline_refine(self, result: Any) -> tuple[float, str]:
        from sklearn.metrics import adjusted_rand_score

        labels = np.asarray(result.final_labels)
        t = self._position(result.indices)
        halves = (t >= 0.5).astype(int)
        keep = labels >= 0
        ari = float(adjusted_rand_score(halves[keep], labels[keep]))
        res = [info.get("resolution_a") for info in (result.history[-1].get("clusters", {}) or {}).values()]
        res_text = ", ".join(f"{r:.1f} Å" if r is not None and np.isfinite(r) else "–" for r in res)
        return ari, f"{len(np.unique(labels[keep]))} clusters; resolutions {res_text}"

    def _headline_hypermolecule(self, result: Any) -> tuple[float, str]:
        from scipy.stats import spearmanr

        truth = np.asarray(self._pretzel.ground_truth["state"], dtype=np.float64)
        tau = np.asarray(result.tau_mean, dtype=np.float64)
        rho = [abs(float(spearmanr(tau[:, k], truth[:, k]).statistic)) for k in range(min(tau.shape[1], truth.shape[1]))]
        return float(min(rho)), "per arm " + ", ".join(f"{r:.2f}" for r in rho)

    def _headline_truth_check(self, result: dict[str, bool | None]) -> tuple[float, str]:
        checked = {n: p for n, p in result.items() if p is not None}
        not_run = sorted(n for n, p in result.items() if p is None)
        passed = sum(bool(p) for p in checked.values())
        frac = passed / len(checked) if checked else float("nan")
        parts = [f"{passed} of {len(checked)} stages passed"]
        failed = sorted(n for n, p in checked.items() if not p)
        if failed:
            parts.append("failed: " + ", ".join(failed))
        if not_run:
            parts.append("not run: " + ", ".join(not_run))
        return frac, "; ".join(parts)

    # ------------------------------------------------------------------ whole runs
    def run_all(self, on_step: Callable[[Step, StepRecord], None] | None = None,
                progress: Progress | None = None) -> list[StepRecord]:
        """Every step in order; ``on_step(step, record)`` after each (draw it, take a screenshot)."""
        out = []
        for step in self.steps:
            record = self.run(step.name, progress)
            if on_step is not None:
                on_step(step, record)
            out.append(record)
        return out

    def table(self) -> list[tuple[str, str, str, str]]:
        """``(step, figure, rule, verdict)`` per stage, for the dock and ``summary.md``."""
        rows = []
        for step in self.steps:
            rec = self.records[step.name]
            if rec.skipped:
                rows.append((step.name, "–", step.rule(), f"skipped: {rec.skipped}"))
            elif rec.passed is None:
                rows.append((step.name, "–", step.rule(), "not run"))
            else:
                rows.append((step.name, f"{rec.value:.3g}", step.rule(), "passed" if rec.passed else "FAILED"))
        return rows

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` holds: ``stages`` (one entry per step), the size, the verdict."""
        stages = [self.records[s.name].summary(s) for s in self.steps]
        final = self.records.get("truth_check")
        return {"size": self.size, "stages": stages,
                "all_passed": bool(final.passed) if final is not None and final.passed is not None else None}


def write_summary(walkthrough: Walkthrough, out: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = walkthrough.summary()
    jpath = out / "summary.json"
    jpath.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    lines = ["# napari-cryohet walkthrough: results against the ground truth", "",
             f"Size: {walkthrough.size}. Each stage's headline figure, its truth check and the screenshot of "
             "its result (docs/walkthrough.md explains each step).", "",
             "| stage | paper | figure | value | check | seconds | screenshot |", "|---|---|---|---|---|---|---|"]
    for entry in data["stages"]:
        h = entry["headline"]
        verdict = ("skipped" if entry["skipped"] else "not run" if h["truth_check"]["passed"] is None
                   else "passed" if h["truth_check"]["passed"] else "**FAILED**")
        value = "–" if h["value"] is None else f"{h['value']:.3g}"
        shot = f"![{entry['name']}]({entry['screenshot']})" if entry["screenshot"] else "–"
        secs = "–" if entry["seconds"] is None else f"{entry['seconds']:.1f}"
        metric = h["metric"].replace("|", "\\|")
        lines.append(f"| {entry['name']} | {entry['paper'] or '–'} | {metric} | {value} | "
                     f"{verdict} ({h['truth_check']['rule']}) | {secs} | {shot} |")
    lines += [""] + [f"- **{e['name']}**: {e['headline']['truth_check']['detail'] or e['skipped'] or ''}"
                     for e in data["stages"]]
    final = data["all_passed"]
    lines += ["", "**Verdict:** " + ("every stage passed its truth check." if final else
                                    "not every stage passed its truth check (see above)." if final is False
                                    else "the truth check did not run.")]
    mpath = out / "summary.md"
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath
