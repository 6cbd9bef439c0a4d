"""TensorBoard curves of a training run (``--log tensorboard``), in ``RUN/tb/``.

Written at every validation from the very record that ``metrics.jsonl`` gets: the log file stays
the source of truth and the event files are a view of it. ``tensorboard --logdir OUT`` shows a
whole sweep, each run named by its folder (``<dataset>/<loss>/seed<k>/fold<f>/tb``), so the
dashboard's run filter groups them by dataset, loss, seed and fold.

Tags (at the validation's step): ``loss/total`` and ``loss/<term>`` (the interval's mean training
loss and its terms), ``lr``, ``term_weights/<term>`` (a ``--loss-schedule``'s weights),
``val/mean_dice`` (the mean validation Dice the run's checkpoint selection uses) and
``val/<metric>/<class>`` (each validation metric's mean per class, and over all classes). The
run's config is its hyperparameters (the HParams tab), with ``val/mean_dice`` as the metric.
A resumed run hides the events an interrupted one wrote after its last checkpoint
(TensorBoard's ``purge_step``), as ``metrics.jsonl`` drops those lines.
"""

from __future__ import annotations

import importlib.util
import json
import weakref
from pathlib import Path

FOLDER = "tb"  # RUN/tb/
SELECTION_TAG = "val/mean_dice"
_current: dict = {}  # the open writer: {"run": weakref to its Run, "writer": SummaryWriter}; one run trains at a time


def check_available(log) -> None:
    """Fail at once (before any data is read) when ``log`` asks for TensorBoard and the
    ``tensorboard`` package is missing."""
    if "tensorboard" in log and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--log tensorboard needs the tensorboard package, which is not installed: "
                         "pip install 'medsegloss[tensorboard]' (or pip install tensorboard)")


def _tag_part(name) -> str:
    return str(name).replace("/", "_").replace(" ", "_")


def scalars(record: dict, class_names=()) -> dict[str, float]:
    """The tags and values of one ``metrics.jsonl`` record (``class_names``: index -> name for
    the per-class validation rows)."""
    values = {"loss/total": record["train_loss"], "lr": record["lr"], SELECTION_TAG: record["val_dice"]}
    values.update({f"loss/{_tag_part(name)}": value for name, value in record.get("terms", {}).items()})
    values.update({f"term_weights/{_tag_part(name)}": value for name, value in record.get("term_weights", {}).items()})
    for row in record.get("val", []):
        label = row["class"]
        if isinstance(label, int) and 0 <= label < len(class_names):
            label = class_names[label]
        values[f"val/{_tag_part(row['metric'])}/{_tag_part(label)}"] = row["mean"]
    return values


def hyperparameters(config: dict) -> dict:
    """A config as TensorBoard hyperparameters: numbers and strings as they are; booleans as
    ``"true"`` / ``"false"`` (torch would write them as 1.0 / 0.0), None as ``"none"``, lists as
    ``"a,b"``, dicts as JSON."""
    def plain(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "none"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True)
        return value
    return {key: plain(value) for key, value in config.items()}


def _writer(run, purge_step: int):
    """The run's SummaryWriter, opened on its first record in this process (closing the previous
    run's), with the hyperparameters written first."""
    if _current and _current["run"]() is run:
        return _current["writer"]
    if _current:
        _current.pop("writer").close()
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    writer = SummaryWriter(str(Path(run.out) / FOLDER), purge_step=purge_step)
    for summary in hparams(hyperparameters(run.config.to_dict()), {SELECTION_TAG: 0.0}):  # the value is unused
        writer.file_writer.add_summary(summary)
    _current.update(run=weakref.ref(run), writer=writer)
    return writer


def log_validation(run, record: dict) -> None:
    """Write ``record`` (the line just appended to ``metrics.jsonl``) when the run logs to
    TensorBoard; the events are flushed at once, so a reader sees every validation so far."""
    if "tensorboard" not in run.config.log:
        return
    # the interval's first step: events an interrupted session wrote from there on are hidden
    writer = _writer(run, purge_step=record["step"] - record["steps"] + 1)
    for tag, value in scalars(record, run.class_names).items():
        writer.add_scalar(tag, value, record["step"])
    writer.flush()
