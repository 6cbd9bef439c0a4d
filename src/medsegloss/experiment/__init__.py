"""Experiments as data: ``config`` (the frozen Config of a run), ``trainer`` (``fit`` and
``medsegloss train``), ``inference`` (checkpoints, predictions, ``medsegloss predict``), ``bench``
(the controlled loss sweep, ``medsegloss bench``) and ``report`` (analysis, tables, documents and
figures of a sweep, ``medsegloss report``). Submodules are imported on use."""
