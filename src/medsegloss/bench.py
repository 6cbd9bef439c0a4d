"""``medsegloss.bench``: the loss benchmark from Python.

``medsegloss.bench.run(losses=[...], datasets=[...], seeds=[...], out=..., **settings)`` runs
``medsegloss bench`` (the same defaults and checks) and returns its report as
:class:`~medsegloss.api.Results` (docs/python.md). The sweep itself lives in
:mod:`medsegloss.experiment.bench`.
"""

from medsegloss.api import Results, Verdict, run

__all__ = ["Results", "Verdict", "run"]
