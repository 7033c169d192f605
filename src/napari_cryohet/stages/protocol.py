"""The stage protocol: the parts every stage shares (docs/design.md, "The stage protocol").

Every stage (simulate, spectral, chain fit, VAE and the stages still to come) is a
package with the same four parts:

1. a **config** dataclass deriving from :class:`StageConfig`: fields declared with
   :func:`param` (help text, unit, allowed values, bounds, runtime-only flag), validated in
   one place (a ``ValueError`` that names the field and what was expected), a
   ``to_dict``/``from_dict`` round trip that survives renamed or added fields, and a
   :meth:`~StageConfig.fingerprint` of the fields that change the science. Widgets and CLI
   flags are generated from the same field declarations (``plugin/_config_form.py``,
   ``cli/_config_args.py``), so a field is declared once;
2. a synchronous, GUI-free ``run(dataset, config, *, inputs, progress, cancel, run_dir)``
   (progress and cancellation from :mod:`napari_cryohet.stages._common`);
3. a **result** deriving from :class:`StageResult`: ``save(run_dir)`` / ``load(run_dir)``
   with a format version, the root particle indices it covers, and named errors
   (:class:`~napari_cryohet.io.errors.MissingFileError`,
   :class:`~napari_cryohet.io.errors.CorruptFileError`) for anything unreadable;
4. when iterative, the shared checkpointer (:mod:`napari_cryohet.stages.checkpoint`).

Per-particle vectors (eigenvectors, latents, cluster features) travel between stages as an
:class:`Embedding`: values, root particle indices and the run that produced them, aligned
to a dataset by particle index (:meth:`Embedding.aligned_to`), never by row position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.errors import CorruptFileError, CryohetInputError, MissingFileError
from napari_cryohet.io.json_files import jsonable, read_json, write_json

__all__ = [
    "param",
    "field_type",
    "StageConfig",
    "ConfigWarning",
    "StageResult",
    "Embedding",
    "ParticleMismatchError",
    "particle_index_hash",
    "array_hash",
    "dataset_indices",
]

RESULT_INFO = "result.json"


class ConfigWarning(UserWarning):
    """A saved config names a field this version does not know (it is ignored)."""


class ParticleMismatchError(CryohetInputError):
    """Per-particle values do not cover the particles of the dataset they are used with."""


# ----------------------------------------------------------------------------- config


def param(default: Any = dataclasses.MISSING, *, help: str = "", unit: str | None = None,
          choices: tuple[Any, ...] | None = None, minimum: float | None = None, maximum: float | None = None,
          runtime: bool = False, label: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with what widgets, CLI flags and validation need to know about it.

    Parameters
    ----------
    default, default_factory
        As for :func:`dataclasses.field`.
    help
        One sentence for tooltips and ``--help``, in words a biologist uses.
    unit
        Physical unit shown beside the value (``"Å"``, ``"px"``, ``"epochs"``).
    choices
        Allowed values (checked in :meth:`StageConfig.__post_init__`).
    minimum, maximum
        Inclusive bounds (``None`` values are not checked).
    runtime
        True for fields that do not change the result (device, worker count, checkpoint
        cadence): left out of :meth:`StageConfig.fingerprint`.
    label
        Widget label (default: the field name in words).
    """
    metadata = {"help": help, "unit": unit, "choices": choices, "minimum": minimum, "maximum": maximum,
                "runtime": runtime, "label": label}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class StageConfig:
    """Base of every stage's settings.

    Subclasses are dataclasses whose fields are declared with :func:`param`, set
    :attr:`STAGE`, and add cross-field checks in :meth:`validate` (calling :meth:`fail`).
    Bounds and allowed values declared on the fields are checked here, once, for all.
    """

    STAGE: ClassVar[str] = ""
    #: Settings of earlier versions that no longer exist (the workspace decides them now):
    #: :meth:`from_dict` drops them without a warning.
    RETIRED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and isinstance(f.default, tuple | type(None)):
                value = tuple(value)  # JSON has no tuples: lists come back from from_dict
                setattr(self, f.name, value)
            meta = f.metadata
            if value is None:
                continue
            if meta.get("choices") is not None and value not in meta["choices"]:
                self.fail(f.name, f"one of {tuple(meta['choices'])}", value)
            if meta.get("minimum") is not None and _is_number(value) and value < meta["minimum"]:
                self.fail(f.name, f"a value >= {meta['minimum']}", value)
            if meta.get("maximum") is not None and _is_number(value) and value > meta["maximum"]:
                self.fail(f.name, f"a value <= {meta['maximum']}", value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks of a subclass (raise through :meth:`fail`)."""

    @classmethod
    def fail(cls, name: str, expected: str, value: Any) -> None:
        """Raise the protocol's ``ValueError``: ``"<Config>.<field>: expected ..., got ..."``."""
        raise ValueError(f"{cls.__name__}.{name}: expected {expected}, got {value!r}")

    @classmethod
    def field_info(cls) -> list[dataclasses.Field]:
        """The declared fields (with their :func:`param` metadata), in order."""
        return list(dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-compatible values (tuples become lists)."""
        return jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path | None = None):
        """Build from :meth:`to_dict` output; unknown keys warn, missing keys take defaults.

        A config saved by another version of the package therefore still loads: a field
        renamed or removed since is reported in a :class:`ConfigWarning` and ignored, a field
        added since takes its default.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - set(cls.RETIRED))
        if unknown:
            where = f" in {source}" if source is not None else ""
            warnings.warn(f"{cls.__name__}: ignoring unknown setting(s) {unknown}{where}", ConfigWarning,
                          stacklevel=2)
        return cls(**{k: v for k, v in data.items() if k in names})

    def science_dict(self) -> dict[str, Any]:
        """The fields that change the result (every field not marked ``runtime``)."""
        d = self.to_dict()
        return {f.name: d[f.name] for f in dataclasses.fields(self) if not f.metadata.get("runtime", False)}

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the stage name and :meth:`science_dict`."""
        text = json.dumps({"stage": self.STAGE, "config": self.science_dict()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Science fields whose value differs from ``other`` (a saved :meth:`to_dict`)."""
        mine = self.science_dict()
        return {k: (other.get(k), v) for k, v in mine.items() if jsonable(other.get(k)) != v}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def field_type(config_cls: type, f: dataclasses.Field) -> tuple[type, bool, bool]:
    """``(base type, optional, is_tuple)`` of a config field, from its annotation."""
    hint = typing.get_type_hints(config_cls)[f.name]
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0]
    if typing.get_origin(hint) is tuple:
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else str
        return inner, optional, True
    if typing.get_origin(hint) is dict:
        return dict, optional, False
    return hint if isinstance(hint, type) else str, optional, False


# ----------------------------------------------------------------------------- results


class StageResult:
    """Base of every stage's result: versioned ``save``/``load`` with named errors.

    Subclasses set :attr:`STAGE` and :attr:`FORMAT_VERSION`, implement ``_save(run_dir)``
    and ``_load(run_dir)``, and expose the root particle indices they cover as
    :attr:`particle_indices` (``None`` for results not tied to particles). ``save`` also
    writes ``result.json`` (stage, format version); ``load`` refuses a newer format and
    turns any parsing failure into :class:`CorruptFileError` naming the file.
    """

    STAGE: ClassVar[str] = ""
    FORMAT_VERSION: ClassVar[int] = 1
    #: Set by the workspace when the result is loaded from, or saved as, a run.
    run_id: str | None = None
    #: Set by ``Workspace.run``: how this call got the result, when not by a fresh run
    #: ("already done with these settings …", "resumed from epoch N of run …").
    run_note: str | None = None

    @property
    def particle_indices(self) -> np.ndarray | None:
        return None

    def embedding(self) -> Embedding | None:
        """The per-particle vectors this result hands to other stages (``None``: none)."""
        return None

    def save(self, run_dir: str | Path) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._save(run_dir)
        write_json(run_dir / RESULT_INFO, {"stage": self.STAGE, "format_version": self.FORMAT_VERSION,
                                           "class": type(self).__name__})
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, **kwargs: Any):
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise MissingFileError(run_dir, f"no {cls.STAGE or cls.__name__} result here (run it first)")
        info_path = run_dir / RESULT_INFO
        if info_path.exists():
            info = read_json(info_path)
            version = info.get("format_version")
            if not isinstance(version, int) or version > cls.FORMAT_VERSION:
                raise CorruptFileError(info_path, f"result format {version!r}; this version of napari-cryohet "
                                       f"reads {cls.STAGE} results up to format {cls.FORMAT_VERSION}",
                                       field="format_version")
        try:
            return cls._load(run_dir, **kwargs)
        except CryohetInputError:
            raise
        except FileNotFoundError as err:
            raise MissingFileError(err.filename or run_dir, f"{cls.STAGE} result file missing") from err
        except (KeyError, ValueError, TypeError, OSError, EOFError, RuntimeError, zipfile.BadZipFile) as err:
            raise CorruptFileError(run_dir, f"unreadable {cls.STAGE} result: {err}") from err

    def _save(self, run_dir: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _load(cls, run_dir: Path, **kwargs: Any):  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------- embedding


def dataset_indices(dataset: Any) -> np.ndarray:
    """Root particle indices of ``dataset`` (``0 … N-1`` for objects without ``indices``)."""
    idx = getattr(dataset, "indices", None)
    if idx is None:
        return np.arange(len(dataset), dtype=np.int64)
    return np.asarray(idx, dtype=np.int64)


def array_hash(*arrays: Any) -> str:
    """16-hex-digit hash of arrays: their dtypes, shapes and bytes (order matters)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def particle_index_hash(indices: np.ndarray) -> str:
    """16-hex-digit hash of a particle-index array (order matters)."""
    return array_hash(np.asarray(indices, dtype="<i8"))


@dataclass
class Embedding:
    """Per-particle vectors keyed on root particle indices.

    Attributes
    ----------
    values
        ``(N, K)`` float array.
    indices
        ``(N,)`` root particle index of each row (``ParticleDataset.indices``).
    run_id
        The run that produced it (``"vae/0001"``), ``None`` for in-memory results.
    name
        What the vectors are (``"eigenvectors"``, ``"latents"``).
    source
        The run's result object when it can do more with the vectors than hand them on
        (a VAE result decodes latents into volumes: ``source.decode``; a spectral result gives
        the coordinates to cluster in: ``source.clustering_embedding``); ``None`` otherwise.
        Not compared, not saved.
    """

    values: np.ndarray
    indices: np.ndarray
    run_id: str | None = None
    name: str = "embedding"
    source: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.values.ndim != 2 or len(self.values) != len(self.indices):
            raise ValueError(f"Embedding {self.name}: values {self.values.shape} do not match "
                             f"{len(self.indices)} particle indices")
        if len(np.unique(self.indices)) != len(self.indices):
            raise ValueError(f"Embedding {self.name}: particle indices repeat")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @classmethod
    def for_dataset(cls, values: np.ndarray, dataset: Any, *, run_id: str | None = None,
                    name: str = "embedding") -> Embedding:
        """Rows that belong, in order, to the particles of ``dataset``."""
        return cls(values, dataset_indices(dataset), run_id=run_id, name=name)

    def aligned_to(self, dataset_or_indices: Any) -> np.ndarray:
        """The rows of the particles of ``dataset_or_indices``, in its order: ``(n, K)``.

        Raises :class:`ParticleMismatchError` naming the missing particles when the
        embedding does not cover every one of them.
        """
        target = (np.asarray(dataset_or_indices, dtype=np.int64) if isinstance(dataset_or_indices, np.ndarray)
                  else dataset_indices(dataset_or_indices))
        order = np.argsort(self.indices, kind="stable")
        sorted_idx = self.indices[order]
        pos = np.searchsorted(sorted_idx, target)
        pos_clipped = np.minimum(pos, max(len(sorted_idx) - 1, 0))
        found = (pos < len(sorted_idx)) & (sorted_idx[pos_clipped] == target) if len(sorted_idx) else \
            np.zeros(len(target), dtype=bool)
        if not found.all():
            missing = target[~found]
            who = self.run_id or self.name
            raise ParticleMismatchError(
                None, f"{who} has no values for {len(missing)} of the {len(target)} particles "
                f"(root indices {missing[:8].tolist()}{' ...' if len(missing) > 8 else ''}); "
                "run it on these particles or pick the matching dataset", field=self.name)
        return self.values[order[pos]]

    def save(self, path: str | Path) -> Path:
        return save_npz_atomic(path, values=self.values, indices=self.indices,
                               meta_json=np.array(json.dumps({"run_id": self.run_id, "name": self.name})))

    @classmethod
    def load(cls, path: str | Path) -> Embedding:
        path = Path(path)
        if not path.exists():
            raise MissingFileError(path, "embedding file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta_json"])) if "meta_json" in data.files else {}
                return cls(data["values"], data["indices"], run_id=meta.get("run_id"),
                           name=meta.get("name", "embedding"))
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise CorruptFileError(path, f"not an embedding (.npz with values and indices): {err}") from err
