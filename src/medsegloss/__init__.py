"""medsegloss: loss functions for medical image segmentation, the metrics to judge them, and a
controlled benchmark to choose between them.

Subpackages are imported on first use (``medsegloss.losses``, ``medsegloss.metrics``,
``medsegloss.data``, ``medsegloss.models``, ``medsegloss.experiment``); importing the package
itself does no work.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["losses", "metrics", "data", "models", "experiment", "distance", "__version__"]


def __getattr__(name):  # lazy subpackages: `import medsegloss; medsegloss.losses.get("dice")`
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
