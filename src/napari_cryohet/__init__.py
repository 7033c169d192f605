"""napari-cryohet: stepwise, visual analysis of heterogeneous cryo-EM data.

Rings (docs/design.md, "Architecture and rings"): ``core`` (pure computation) ← ``io`` (file formats) ←
``stages`` (one module per stage) ← ``plugin`` (napari) and ``cli`` (shell).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-cryohet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
