"""Experiments as data: the config dataclass, the trainer (``fit``), prediction, and the
benchmark and report built on them. Submodules are imported on use."""
