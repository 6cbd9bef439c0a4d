"""Evaluation of a model on a dataset split: predict every item, stack the slices of a volume
back into the case, score per case and class with ``medsegloss.metrics.evaluate``."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medsegloss.experiment.distributed import gather_to_first
from medsegloss.experiment.predict import labels_from_logits, predict_logits


def predict_items(model, dataset, indices, batch_size: int, amp_dtype=None) -> list[tuple]:
    """``(case, slice, spacing, prediction, label)`` per item, predictions as uint8 arrays."""
    from torch.utils.data import DataLoader, Subset

    records = []
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False)
    for batch in loader:
        predictions = labels_from_logits(predict_logits(model, batch["image"], amp_dtype))
        predictions = predictions.to(torch.uint8).cpu().numpy()
        spacings = torch.stack([torch.as_tensor(s, dtype=torch.float64) for s in batch["spacing"]], 1)
        for i in range(len(predictions)):
            records.append((batch["case"][i], int(batch["slice"][i]), tuple(spacings[i].tolist()),
                            predictions[i], batch["label"][i].to(torch.uint8).numpy()))
    return records


def assemble_cases(records: list[tuple], dataset) -> tuple[list, list, list, list]:
    """Group item records by case; slices of a volume are stacked back in slice order and get
    the volume's 3-D spacing, so metrics are per case as the field reports them."""
    by_case: dict[str, list[tuple]] = {}
    for record in records:
        by_case.setdefault(record[0], []).append(record)
    cases, predictions, labels, spacings = [], [], [], []
    for case, items in by_case.items():
        items.sort(key=lambda record: record[1])
        if items[0][1] >= 0:  # slices of a volume
            predictions.append(np.stack([item[3] for item in items]))
            labels.append(np.stack([item[4] for item in items]))
            spacings.append(tuple(float(s) for s in dataset.volume_spacing(case)))
        else:  # whole volumes, or single 2-D images
            predictions.append(items[0][3])
            labels.append(items[0][4])
            spacings.append(items[0][2])
        cases.append(case)
    return cases, predictions, labels, spacings


def evaluate(model: nn.Module, dataset, *, metrics=("dice", "iou", "pixel_error"), batch_size: int = 8,
             amp_dtype=None, rank: int = 0, world_size: int = 1) -> list[dict] | None:
    """Per-case, per-class metric rows (``medsegloss.metrics.evaluate``) of ``model`` on ``dataset``.

    Under DDP each rank predicts every ``world_size``-th item and rank 0 gathers and scores them;
    other ranks return None.
    """
    from medsegloss.metrics import evaluate as score

    model = getattr(model, "module", model)  # never DDP's forward here: ranks run unequal batches
    records = predict_items(model, dataset, range(rank, len(dataset), world_size), batch_size, amp_dtype)
    records = gather_to_first(records, rank, world_size)
    if records is None:
        return None
    if not records:
        return []
    cases, predictions, labels, spacings = assemble_cases(records, dataset)
    return score(predictions, labels, dataset.num_classes, spacing=spacings, metrics=tuple(metrics),
                 case_ids=cases)


def mean_dice(rows: list[dict]) -> float:
    """Mean over classes of the per-class mean Dice over cases (NaN cases left out)."""
    per_class: dict[int, list[float]] = {}
    for row in rows:
        value = row.get("dice", float("nan"))
        if value is not None and not math.isnan(value):
            per_class.setdefault(row["class"], []).append(value)
    means = [sum(values) / len(values) for values in per_class.values() if values]
    return sum(means) / len(means) if means else float("nan")
