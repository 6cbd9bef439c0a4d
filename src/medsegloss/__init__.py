"""medsegloss: loss functions for medical image segmentation, the metrics to judge them, and a
controlled benchmark to choose between them.

Subpackages are imported on first use (``medsegloss.losses``, ``medsegloss.metrics``,
``medsegloss.data``, ``medsegloss.models``, ``medsegloss.experiment``), and so is the Python API
(``medsegloss.bench.run``, ``medsegloss.train``, ``medsegloss.report``: :mod:`medsegloss.api`);
importing the package itself does no work.
"""

import importlib

__version__ = "0.1.0"
_MODULES = ["losses", "metrics", "data", "models", "experiment", "distance", "bench"]
_API = ["train", "report", "Results"]  # from medsegloss.api
__all__ = [*_MODULES, *_API, "__version__"]


def __getattr__(name):  # lazy: `import medsegloss; medsegloss.losses.get("dice")`, `medsegloss.train(...)`
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
