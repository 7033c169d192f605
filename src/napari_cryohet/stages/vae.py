"""VAE stage: train the structural-basis VAE of 004_0460feb3adf92bbd.txt, decode volumes.

``train_vae(dataset, config, *, progress=None, cancel=None) -> VAEResult`` (alias
``run_vae``) streams minibatches from the (lazy) dataset, reports the loss per epoch,
honours cancellation within one batch, and — when ``config.workspace`` is set — writes into
``<workspace>/vae/``:

- ``checkpoint.pt`` after every epoch (atomic; model, optimiser, epoch, history), from
  which a new call with ``resume=True`` continues *exactly* (per-epoch random streams are
  derived from ``(seed, epoch)``, so an interrupted and resumed run ends with the same
  weights as an uninterrupted one);
- ``latents_epoch_NNN.npz`` after every epoch: ``mu``, ``logvar`` and ``indices`` of all
  particles (the posterior means seen during that epoch's pass, as cryoDRGN's ``z.N.pkl``);
- on completion the result (:meth:`VAEResult.save`): ``model.pt``, ``latents.npz``
  (posterior means from a final pass with the trained encoder), ``history.json``,
  ``config.json``.

The model, loss and fused sparse slice live in :mod:`napari_cryohet.core.vae_model` and
:mod:`napari_cryohet.core.basis_slice`. This module also holds what the latent explorer
needs and that is science rather than GUI: 2D/3D embeddings of the latents (PCA, UMAP),
mapping embedding-space points back to latents, and latent paths.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.device import select_device
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.vae_model import ModelShape, StructuralBasisVAE
from napari_cryohet.core.vae_normalisation import spectral_normalisation, spectral_shell_sums
from napari_cryohet.io.atomic import atomic_path, save_npz_atomic
from napari_cryohet.io.errors import CryohetInputError, MissingColumnError
from napari_cryohet.stages._common import (
    LR_SCHEDULES,
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    set_scheduled_lr,
    stage_dir,
)

__all__ = [
    "VAEConfig",
    "VAEResult",
    "train_vae",
    "run_vae",
    "decode_volumes",
    "encode_dataset",
    "embed_latents",
    "embedding_to_latent",
    "latent_path",
    "isosurface",
    "points_in_polygon",
    "EMBEDDING_METHODS",
]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class VAEConfig:
    """Training options (defaults follow §4.2 and §5.1 of 004_0460feb3adf92bbd.txt).

    Attributes
    ----------
    zdim
        Latent dimension (8 in §5.1).
    n_basis
        ``K`` structural basis volumes (16 in §4.2).
    epochs
        Passes over the data.
    batch_size
        Images per optimiser step. §4.3 notes that dense basis gradients are efficient from
        about 64 images on; 16 costs about 1.5× more time per epoch (each step still updates
        the whole basis) but takes 4× more steps, and it trained better latents and volumes
        in equal epochs (``adk_volumes`` benchmark, 3 epochs: k-NN accuracy 0.30 → 0.33,
        FSC AUC 0.468 → 0.475). cryoDRGN also defaults to 16 images per step.
    lr, lr_basis
        Adam learning rates of the networks and of the basis volumes (1e-3 each; 3e-3 and
        1e-2 for the basis fitted noise and lowered the FSC to the truth).
    lr_schedule
        ``"cosine"`` (both rates decay to 0 over ``epochs``: the final basis volumes are
        averaged over many noisy minibatches rather than taken from the last few) or
        ``"constant"``.
    beta
        Weight of the KL term (1 = evidence lower bound per frequency, with the noise
        variance taken as the data's power). At SNR ≈ 0.1, β = 1 collapsed the latents
        (k-NN accuracy 0.13); 0.1–0.3 keep the heterogeneity in them.
    prior_weight
        Weight of the Gaussian log-prior on the structural basis volumes (``λ P`` of eq. 4,
        which the paper sets to 0): ``prior_weight · Σ_k ‖V^(k)‖² / N`` per image, so it
        counts once per epoch whatever ``N``. On the ``adk_volumes`` benchmark (3 epochs)
        3000 raised the FSC AUC to the truth from 0.479 to 0.508 (0.5 crossing 6.4 → 5.9 Å)
        and left the k-NN accuracy of the latents as it was (0.329 → 0.326); at 6 epochs,
        300 raised FSC AUC / k-NN from 0.442 / 0.451 to 0.465 / 0.510 — without it the grid
        basis fits noise as training goes on. 0 switches it off.
    enc_dim, enc_blocks, dec_dim, dec_blocks
        Widths and residual-block counts of the encoder and of ``s(z)``.
    radius
        Model's Fourier radius in pixels of frequency (``None``: Nyquist ``D/2``).
    mask_radius
        Encoder's real-space mask radius, fraction of ``D/2``.
    enc_whiten
        Spectrally normalise the encoder's input too (``ModelShape.enc_whiten``).
    normalisation_images
        Images used to estimate ``σ̄_y`` (eq. 5); all when larger than the dataset.
    seed
        Seeds the initial weights, the shuffling and the reparameterisation noise.
    device
        ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` (``core.device.select_device``).
    workspace
        Directory for checkpoints, per-epoch latents and the result (``<workspace>/vae``);
        ``None`` keeps everything in memory.
    resume
        Continue from ``<workspace>/vae/checkpoint.pt`` when it exists.
    """

    # Model hyper-parameters: the defaults are ModelShape's, so the two cannot drift apart.
    zdim: int = ModelShape.zdim
    n_basis: int = ModelShape.n_basis
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    lr_basis: float = 1e-3
    lr_schedule: str = "cosine"
    beta: float = 0.1
    prior_weight: float = 3000.0
    enc_dim: int = ModelShape.enc_dim
    enc_blocks: int = ModelShape.enc_blocks
    dec_dim: int = ModelShape.dec_dim
    dec_blocks: int = ModelShape.dec_blocks
    radius: float | None = ModelShape.radius
    mask_radius: float = ModelShape.mask_radius
    enc_whiten: bool = ModelShape.enc_whiten
    normalisation_images: int = 10000
    seed: int = 0
    device: str | None = None
    workspace: str | None = None
    resume: bool = True

    def model_shape(self, box_size: int) -> ModelShape:
        """The model's shape: ``ModelShape``'s fields taken from this config by name."""
        names = [f.name for f in dataclasses.fields(ModelShape) if f.name != "box_size"]
        return ModelShape(box_size=int(box_size), **{name: getattr(self, name) for name in names})

    def validate(self) -> None:
        positive = ("zdim", "n_basis", "batch_size", "enc_dim", "dec_dim", "normalisation_images")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VAEConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("epochs", "enc_blocks", "dec_blocks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"VAEConfig.{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("lr", "lr_basis"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"VAEConfig.{name} must be positive, got {getattr(self, name)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"VAEConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if float(self.prior_weight) < 0:
            raise ValueError(f"VAEConfig.prior_weight must be ≥ 0, got {self.prior_weight}")
        if float(self.beta) < 0:
            raise ValueError(f"VAEConfig.beta must be ≥ 0, got {self.beta}")


@dataclass
class VAEResult:
    """A trained model and the latents of the particles it was trained on.

    Attributes
    ----------
    model
        The trained :class:`~napari_cryohet.core.vae_model.StructuralBasisVAE`.
    config
        The :class:`VAEConfig` used.
    latents
        ``(N, zdim)`` float32 posterior means ``μ`` (final encoder pass).
    logvar
        ``(N, zdim)`` float32 posterior log-variances.
    indices
        ``(N,)`` particle indices in the root dataset (``ParticleDataset.indices``).
    apix
        Pixel size of the decoded volumes (Å/px).
    history
        One dict per epoch: ``epoch``, ``loss``, ``reconstruction``, ``kl``, ``seconds``.
    """

    model: StructuralBasisVAE
    config: VAEConfig
    latents: np.ndarray
    logvar: np.ndarray
    indices: np.ndarray
    apix: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def box_size(self) -> int:
        return self.model.shape.box_size

    def decode(self, z: Any, *, batch: int = 8) -> np.ndarray:
        """Volumes at latent points ``z`` ``(B, zdim)`` → ``(B, D, D, D)`` float32 (see
        :meth:`StructuralBasisVAE.decode_volume`)."""
        return decode_volumes(self.model, z, batch=batch)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt``, ``latents.npz``, ``history.json``, ``config.json`` (atomic)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.pt") as tmp:
            torch.save({"model_shape": dataclasses.asdict(self.model.shape),
                        "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                        "apix": float(self.apix)}, tmp)
        save_npz_atomic(directory / "latents.npz", mu=self.latents, logvar=self.logvar, indices=self.indices)
        _write_json(directory / "history.json", self.history)
        _write_json(directory / "config.json", dataclasses.asdict(self.config))
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = "cpu") -> VAEResult:
        """Read a result written by :meth:`save` (raises ``MissingFileError`` when absent)."""
        from napari_cryohet.io.errors import CorruptFileError, MissingFileError

        directory = Path(directory)
        for name in ("model.pt", "latents.npz"):
            if not (directory / name).exists():
                raise MissingFileError(directory / name, "VAE result file not found (train first)")
        try:
            blob = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
            model = _model_from_blob(blob).to(select_device(device))
        except (RuntimeError, KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(directory / "model.pt", f"not a VAE model: {err}") from err
        lat = np.load(directory / "latents.npz")
        cfg_path = directory / "config.json"
        cfg = VAEConfig(**json.loads(cfg_path.read_text())) if cfg_path.exists() else VAEConfig()
        hist_path = directory / "history.json"
        history = json.loads(hist_path.read_text()) if hist_path.exists() else []
        return cls(model=model, config=cfg, latents=lat["mu"], logvar=lat["logvar"], indices=lat["indices"],
                   apix=float(blob.get("apix", 1.0)), history=history)


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def _model_from_blob(blob: dict) -> StructuralBasisVAE:
    model = StructuralBasisVAE(ModelShape(**blob["model_shape"]))
    model.load_state_dict(blob["model"])
    return model


# ---------------------------------------------------------------------------- training

def _check_dataset(dataset: ParticleDataset) -> None:
    src = dataset.meta.get("source") if isinstance(dataset.meta, dict) else None
    if dataset.rotations is None:
        raise MissingColumnError(src, "the VAE needs particle poses (consensus refinement)", field="rotations")
    d = dataset.box_size
    if d % 2 or dataset.images.shape[-2] != d:
        raise CryohetInputError(src, f"images must be square with an even edge, got {tuple(dataset.images.shape[1:])}",
                                field="images")
    if len(dataset) < 2:
        raise CryohetInputError(src, f"need at least 2 particles, got {len(dataset)}", field="images")


class _Batches:
    """Reads batches of images, poses, CTF and shifts as device tensors."""

    def __init__(self, dataset: ParticleDataset, model: StructuralBasisVAE, device: torch.device):
        self.ds, self.model, self.device = dataset, model, device
        self.d = dataset.box_size

    def __call__(self, idx: np.ndarray):
        images = torch.as_tensor(self.ds.get_images(idx), device=self.device)  # (B, D, D)
        rotations = torch.as_tensor(np.asarray(self.ds.rotations[idx]), dtype=torch.float32, device=self.device)
        shifts_px = None
        if self.ds.shifts_a is not None:
            shifts_px = torch.as_tensor(np.asarray(self.ds.shifts_a[idx]) / self.ds.apix, dtype=torch.float32,
                                        device=self.device)
        ctf = None
        if self.ds.ctf is not None:
            ctf = compute_ctf_2d(self.d, self.ds.apix, **self.ds.ctf.to_torch(indices=idx, device=self.device))
        return images, rotations, shifts_px, ctf


def _estimate_normalisation(dataset: ParticleDataset, model: StructuralBasisVAE, batches: _Batches,
                            config: VAEConfig, progress, cancel) -> None:
    """``σ̄_y`` per shell (eq. 5 of 004_0460feb3adf92bbd.txt) and the mean power per frequency."""
    n = len(dataset)
    rng = np.random.default_rng([config.seed, 5])
    use = np.sort(rng.choice(n, size=min(n, config.normalisation_images), replace=False))
    power = ctf2 = None
    disc_power = 0.0
    disc = model.freq_disc.reshape(-1).bool()
    for start in range(0, len(use), 256):
        check_cancel(cancel)
        idx = use[start:start + 256]
        images, _, _, ctf = batches(idx)
        p, c = spectral_shell_sums(images, ctf)
        power = p if power is None else power + p
        ctf2 = c if ctf2 is None else ctf2 + c
        spec = torch.fft.fft2(images.to(torch.float64)).abs().pow(2).reshape(len(idx), -1)
        disc_power += float(torch.fft.fftshift(spec.reshape(len(idx), batches.d, batches.d),
                                               dim=(-2, -1)).reshape(len(idx), -1)[:, disc].sum())
        report(progress, 0.02 * (start + len(idx)) / len(use), "spectral normalisation (eq. 5)")
    sigma = spectral_normalisation(power, ctf2)
    power_mean = disc_power / (len(use) * int(disc.sum()))
    model.set_spectral_normalisation(sigma, power_mean)


def _epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """Shuffling and reparameterisation streams of one epoch, derived from ``(seed, epoch)``."""
    base = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])
    shuffle = torch.Generator().manual_seed(base)
    noise = torch.Generator(device=device).manual_seed(base + 1)
    return shuffle, noise


def _new_model(shape: ModelShape, seed: int) -> StructuralBasisVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return StructuralBasisVAE(shape)


def _optimizer(model: StructuralBasisVAE, config: VAEConfig) -> torch.optim.Adam:
    nets = [p for n, p in model.named_parameters() if n != "basis"]
    return torch.optim.Adam([{"params": [model.basis], "lr": config.lr_basis},
                             {"params": nets, "lr": config.lr}])


def _save_checkpoint(path: Path, model, optimizer, epoch: int, history, config: VAEConfig, n: int) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model_shape": dataclasses.asdict(model.shape), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": int(epoch), "history": history,
                    "config": dataclasses.asdict(config), "n_particles": int(n)}, tmp)


def _load_checkpoint(path: Path, shape: ModelShape, n: int, device: torch.device):
    from napari_cryohet.io.errors import CorruptFileError

    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, OSError, ValueError) as err:
        raise CorruptFileError(path, f"unreadable VAE checkpoint: {err}") from err
    if blob.get("model_shape") != dataclasses.asdict(shape):
        raise CryohetInputError(path, f"checkpoint model {blob.get('model_shape')} differs from the configured "
                                f"{dataclasses.asdict(shape)}; use another workspace or resume=False",
                                field="model_shape")
    if int(blob.get("n_particles", -1)) != n:
        raise CryohetInputError(path, f"checkpoint was trained on {blob.get('n_particles')} particles, "
                                f"the dataset has {n}", field="n_particles")
    return blob


def train_vae(
    dataset: ParticleDataset,
    config: VAEConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> VAEResult:
    """Train the structural-basis VAE (§4 of 004_0460feb3adf92bbd.txt) on ``dataset``.

    Parameters
    ----------
    dataset
        Particles with poses (``rotations``; shifts and CTF optional), images read lazily
        in batches of ``config.batch_size``.
    config
        :class:`VAEConfig` (defaults when ``None``).
    progress
        ``progress(fraction, message)``; the message carries the epoch's mean loss.
    cancel
        Checked before every batch; a cancelled run raises ``Cancelled`` and leaves the last
        epoch's checkpoint intact (resume continues from it).

    Returns
    -------
    :class:`VAEResult` (saved to ``<workspace>/vae`` when ``config.workspace`` is set).
    """
    config = config or VAEConfig()
    config.validate()
    _check_dataset(dataset)
    device = select_device(config.device)
    n, d = len(dataset), dataset.box_size
    shape = config.model_shape(d)
    out_dir = stage_dir(config.workspace, "vae") if config.workspace else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None

    model = _new_model(shape, config.seed).to(device)
    optimizer = _optimizer(model, config)
    batches = _Batches(dataset, model, device)
    start_epoch, history = 0, []
    if ckpt_path is not None and config.resume and ckpt_path.exists():
        blob = _load_checkpoint(ckpt_path, shape, n, device)
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        start_epoch, history = int(blob["epoch"]), list(blob["history"])
        report(progress, 0.02, f"resumed from epoch {start_epoch}")
    else:
        _estimate_normalisation(dataset, model, batches, config, progress, cancel)

    n_batches = (n + config.batch_size - 1) // config.batch_size
    epochs = max(int(config.epochs), start_epoch)
    for epoch in range(start_epoch, int(config.epochs)):
        t0 = time.perf_counter()
        shuffle, noise = _epoch_generators(config.seed, epoch, device)
        order = torch.randperm(n, generator=shuffle).numpy()
        mu_all = np.zeros((n, config.zdim), np.float32)
        logvar_all = np.zeros((n, config.zdim), np.float32)
        sums = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0}
        model.train()
        for b in range(n_batches):
            check_cancel(cancel)
            idx = np.sort(order[b * config.batch_size:(b + 1) * config.batch_size])
            set_scheduled_lr(optimizer, (config.lr_basis, config.lr), config.lr_schedule, epoch * n_batches + b,
                             int(config.epochs) * n_batches)
            images, rotations, shifts_px, ctf = batches(idx)
            y_points, enc_in = model.preprocess(images, shifts_px)
            ctf_points = model.ctf_at_points(ctf) if ctf is not None else None
            out = model.loss(y_points, enc_in, rotations, ctf_points, beta=config.beta,
                             prior_scale=config.prior_weight / n, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            for key in sums:
                sums[key] += float(out[key].detach()) * len(idx)
            mu_all[idx] = out["mu"].cpu().numpy()
            logvar_all[idx] = out["logvar"].cpu().numpy()
            if b % 10 == 0 or b == n_batches - 1:
                frac = 0.02 + 0.93 * (epoch + (b + 1) / n_batches) / max(1, epochs)
                report(progress, frac, f"epoch {epoch + 1}/{epochs} batch {b + 1}/{n_batches} "
                                       f"loss {float(out['loss'].detach()):.4f}")
        record = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                  "seconds": time.perf_counter() - t0}
        history.append(record)
        report(progress, 0.02 + 0.93 * (epoch + 1) / max(1, epochs),
               f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} (rec {record['reconstruction']:.4f}, "
               f"KL {record['kl']:.2f})")
        if out_dir is not None:
            save_npz_atomic(out_dir / f"latents_epoch_{epoch + 1:03d}.npz", mu=mu_all, logvar=logvar_all,
                            indices=np.asarray(dataset.indices))
            _save_checkpoint(ckpt_path, model, optimizer, epoch + 1, history, config, n)

    mu, logvar = encode_dataset(model, dataset, batch_size=max(config.batch_size, 128), device=device,
                                cancel=cancel, progress=lambda f, m: report(progress, 0.95 + 0.05 * f, m))
    result = VAEResult(model=model, config=config, latents=mu, logvar=logvar,
                       indices=np.asarray(dataset.indices), apix=float(dataset.apix), history=history)
    if out_dir is not None:
        result.save(out_dir)
    report(progress, 1.0, f"done: {len(history)} epochs, final loss "
                          f"{history[-1]['loss']:.4f}" if history else "done")
    return result


#: ``run_x`` name of the stage pattern (CONTRACT).
run_vae = train_vae


@torch.no_grad()
def encode_dataset(
    model: StructuralBasisVAE,
    dataset: ParticleDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of every particle: ``(N, zdim)`` each, float32."""
    _check_dataset(dataset)
    if dataset.box_size != model.shape.box_size:
        raise CryohetInputError(dataset.meta.get("source"), f"box size {dataset.box_size} differs from the "
                                f"model's {model.shape.box_size}", field="images")
    device = next(model.parameters()).device if device is None else select_device(device)
    model.eval()
    batches = _Batches(dataset, model, device)
    n = len(dataset)
    mu = np.zeros((n, model.shape.zdim), np.float32)
    logvar = np.zeros_like(mu)
    for start in range(0, n, batch_size):
        check_cancel(cancel)
        idx = np.arange(start, min(n, start + batch_size))
        images, _, shifts_px, _ = batches(idx)
        _, enc_in = model.preprocess(images, shifts_px)
        m, lv = model.encode(enc_in)
        mu[idx], logvar[idx] = m.cpu().numpy(), lv.cpu().numpy()
        report(progress, (idx[-1] + 1) / n, "encoding particles")
    return mu, logvar


def decode_volumes(model: StructuralBasisVAE, z: Any, *, batch: int = 8) -> np.ndarray:
    """Volumes at latent points: ``(B, zdim)`` → ``(B, D, D, D)`` float32 numpy."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.dim() == 1:
        z = z[None]
    if z.shape[-1] != model.shape.zdim:
        raise ValueError(f"z must have {model.shape.zdim} columns, got shape {tuple(z.shape)}")
    return model.decode_volume(z, batch=batch).cpu().numpy()


# ---------------------------------------------------------------------------- latent space

#: Embedding name → (description, n_components).
EMBEDDING_METHODS: dict[str, tuple[str, int]] = {
    "pca2": ("PCA, first 2 components", 2),
    "pca3": ("PCA, first 3 components", 3),
    "umap2": ("UMAP, 2D (McInnes et al. 2018; §5.1 of 004_0460feb3adf92bbd.txt)", 2),
    "umap3": ("UMAP, 3D", 3),
}


def embed_latents(latents: np.ndarray, *, method: str = "pca2", seed: int = 0) -> np.ndarray:
    """Low-dimensional view of the latents for display.

    Parameters
    ----------
    latents
        ``(N, zdim)``.
    method
        A key of :data:`EMBEDDING_METHODS`. A latent space of lower dimension than asked is
        zero-padded.
    seed
        UMAP's random state.

    Returns
    -------
    ``(N, 2)`` or ``(N, 3)`` float32.
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"method must be one of {sorted(EMBEDDING_METHODS)}, got {method!r}")
    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"latents must have shape (N ≥ 2, zdim), got {x.shape}")
    k = EMBEDDING_METHODS[method][1]
    if method.startswith("pca"):
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        emb = xc @ vt[:k].T
    else:
        import umap

        emb = umap.UMAP(n_components=k, random_state=int(seed), n_neighbors=min(15, len(x) - 1)).fit_transform(x)
    if emb.shape[1] < k:
        emb = np.pad(emb, ((0, 0), (0, k - emb.shape[1])))
    return emb.astype(np.float32)


def embedding_to_latent(points: np.ndarray, embedding: np.ndarray, latents: np.ndarray, *,
                        k: int = 10) -> np.ndarray:
    """Latent points for positions in an embedding (UMAP has no inverse): the mean latent
    of the ``k`` particles nearest to each position.

    Parameters
    ----------
    points
        ``(M, c)`` positions in the embedding space.
    embedding
        ``(N, c)`` particle embedding; ``latents`` ``(N, zdim)`` their latents.

    Returns
    -------
    ``(M, zdim)`` float32.
    """
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    embedding = np.asarray(embedding, dtype=np.float64)
    c = min(points.shape[1], embedding.shape[1])
    d2 = ((points[:, None, :c] - embedding[None, :, :c]) ** 2).sum(-1)  # (M, N)
    k = max(1, min(int(k), len(embedding)))
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
    return np.asarray(latents, dtype=np.float32)[nearest].mean(1)


def latent_path(anchors: np.ndarray, n_steps: int) -> np.ndarray:
    """``n_steps`` points evenly spaced (by arc length) along the polyline through ``anchors``.

    Parameters
    ----------
    anchors
        ``(A ≥ 2, zdim)`` latent points (two end points, or a drawn path mapped to latents).
    n_steps
        Number of volumes in the series (≥ 2).

    Returns
    -------
    ``(n_steps, zdim)`` float32, starting at ``anchors[0]`` and ending at ``anchors[-1]``.
    """
    a = np.asarray(anchors, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"anchors must have shape (A ≥ 2, zdim), got {a.shape}")
    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be ≥ 2, got {n_steps}")
    seg = np.linalg.norm(np.diff(a, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(a[:1], int(n_steps), 0).astype(np.float32)
    t = np.linspace(0.0, s[-1], int(n_steps))
    out = np.stack([np.interp(t, s, a[:, j]) for j in range(a.shape[1])], -1)
    return out.astype(np.float32)


def isosurface(volume: np.ndarray, *, level_sigma: float = 2.0, apix: float = 1.0, smooth_voxels: float = 1.0):
    """Marching-cubes surface of a (Gaussian-smoothed) volume at ``mean + level_sigma · std``.

    Parameters
    ----------
    volume
        ``(D, D, D)`` real volume.
    level_sigma
        Iso-level in standard deviations above the mean (clipped into the data range).
    apix
        Voxel size: vertices are returned in Å (napari ``scale``-free surface coordinates).
    smooth_voxels
        σ (voxels) of a Gaussian applied first, so the surface of a single decoded volume
        follows the molecule rather than its high-frequency noise (0: none).

    Returns
    -------
    vertices ``(V, 3)`` float32 (z, y, x order, Å), faces ``(F, 3)`` int; empty arrays when
    the level is outside the data range.
    """
    from skimage.measure import marching_cubes

    vol = np.asarray(volume, dtype=np.float32)
    if smooth_voxels > 0:
        from scipy.ndimage import gaussian_filter

        vol = gaussian_filter(vol, float(smooth_voxels))
    level = float(vol.mean() + level_sigma * vol.std())
    lo, hi = float(vol.min()), float(vol.max())
    if not lo < level < hi:
        level = lo + 0.5 * (hi - lo)
    if hi <= lo:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=(apix, apix, apix))
    return verts.astype(np.float32), faces.astype(np.int64)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Indices of ``points`` ``(N, 2)`` inside ``polygon`` ``(V, 2)`` (same coordinate order)."""
    from matplotlib.path import Path as MplPath

    pts = np.asarray(points, dtype=np.float64)[:, :2]
    poly = np.asarray(polygon, dtype=np.float64)[:, -2:]
    if len(poly) < 3:
        raise ValueError(f"polygon needs at least 3 vertices, got {len(poly)}")
    return np.flatnonzero(MplPath(poly).contains_points(pts))
