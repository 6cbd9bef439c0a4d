"""A model's per-case metric rows on a dataset: every item predicted (volumes by sliding windows
when larger than the training patch), the slices of a volume stacked back into the case, scored
with its voxel spacing by ``medsegloss.metrics.evaluate`` — how validation and test score a run."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medsegloss.experiment.distributed import gather_to_first
from medsegloss.experiment.inference import labels_from_logits, model_logits


def predict_items(model, dataset, indices, batch_size: int, amp_dtype=None, patch_size=None) -> list[tuple]:
    """``(case, slice, spacing, prediction, label)`` per item, predictions as uint8 arrays
    (multi-hot ``(R, ...)`` for a multi-label dataset: ``sigmoid > 0.5`` per region). Volumes
    (``dims=3``) go one at a time, by sliding windows of ``patch_size`` when larger than it.
    Voxels of the dataset's ignore label are background in both prediction and label, so no
    overlap count (TP, FP, FN of a class) includes them, as in nnU-Net's evaluation."""
    from torch.utils.data import DataLoader, Subset

    records, multilabel = [], bool(dataset.multilabel)
    if dataset.dims == 3:
        batch_size = 1  # native volume sizes may differ; the windows of one volume are batched instead
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False)
    for batch in loader:
        predictions = labels_from_logits(model_logits(model, batch["image"], amp_dtype, patch_size), multilabel)
        predictions = predictions.to(torch.uint8).cpu().numpy()
        spacings = torch.stack([torch.as_tensor(s, dtype=torch.float64) for s in batch["spacing"]], 1)
        labels = batch["label"].to(torch.uint8).numpy()
        ignored = batch["ignore"].numpy() if "ignore" in batch else (  # regions: a mask; classes: the label value
            labels == dataset.ignore_index if dataset.ignore_index is not None else None)
        for i in range(len(predictions)):
            if ignored is not None:
                predictions[i][..., ignored[i]] = 0
                labels[i][..., ignored[i]] = 0
            records.append((batch["case"][i], int(batch["slice"][i]), tuple(spacings[i].tolist()),
                            predictions[i], labels[i]))
    return records


def assemble_cases(records: list[tuple], dataset) -> tuple[list, list, list, list]:
    """Group item records by case; slices of a volume are stacked back in slice order and get
    the volume's 3-D spacing, so metrics are per case as the field reports them."""
    by_case: dict[str, list[tuple]] = {}
    for record in records:
        by_case.setdefault(record[0], []).append(record)
    cases, predictions, labels, spacings = [], [], [], []
    axis = 1 if dataset.multilabel else 0  # multi-hot slices (R, H, W) stack to (R, D, H, W)
    for case, items in by_case.items():
        items.sort(key=lambda record: record[1])
        if items[0][1] >= 0:  # slices of a volume
            predictions.append(np.stack([item[3] for item in items], axis=axis))
            labels.append(np.stack([item[4] for item in items], axis=axis))
            spacings.append(tuple(float(s) for s in dataset.volume_spacing(case)))
        else:  # whole volumes, or single 2-D images
            predictions.append(items[0][3])
            labels.append(items[0][4])
            spacings.append(items[0][2])
        cases.append(case)
    return cases, predictions, labels, spacings


def evaluate_model(model: nn.Module, dataset, *, metrics=("dice", "iou", "pixel_error"), batch_size: int = 8,
                   amp_dtype=None, rank: int = 0, world_size: int = 1, volumes: bool = False, patch_size=None):
    """Per-case, per-class metric rows (``medsegloss.metrics.evaluate``) of ``model`` on ``dataset``:
    every item predicted, the slices of a volume stacked back into the case. A multi-label
    dataset (overlapping regions) is scored per region (``multilabel=True``, rows per region
    name); a 3-D model on volumes larger than ``patch_size`` runs by sliding windows.

    ``volumes=True`` returns ``(rows, per_case)`` instead, ``per_case`` the predicted and true
    voxel counts per class of each case (:func:`~medsegloss.experiment.verdict.case_volumes`,
    the input of the collapse rule).

    Under DDP each rank predicts every ``world_size``-th item and rank 0 gathers and scores them;
    other ranks return None.
    """
    from medsegloss.metrics import evaluate

    model = getattr(model, "module", model)  # never DDP's forward here: ranks run unequal batches
    records = predict_items(model, dataset, range(rank, len(dataset), world_size), batch_size, amp_dtype, patch_size)
    records = gather_to_first(records, rank, world_size)
    if records is None:
        return (None, None) if volumes else None
    if not records:
        return ([], []) if volumes else []
    cases, predictions, labels, spacings = assemble_cases(records, dataset)
    multilabel = dataset.multilabel
    rows = evaluate(predictions, labels, dataset.num_classes, spacing=spacings, metrics=tuple(metrics),
                    case_ids=cases, **({"multilabel": True} if multilabel else {}))
    if not volumes:
        return rows
    from medsegloss.experiment.verdict import case_volumes

    per_case = [{"case": case, **case_volumes(prediction, label, dataset.num_classes, multilabel=multilabel)}
                for case, prediction, label in zip(cases, predictions, labels)]
    return rows, per_case


def mean_dice(rows: list[dict]) -> float:
    """Mean over classes of the per-class mean Dice over cases (NaN cases left out)."""
    per_class: dict[int, list[float]] = {}
    for row in rows:
        value = row.get("dice", float("nan"))
        if value is not None and not math.isnan(value):
            per_class.setdefault(row["class"], []).append(value)
    means = [sum(values) / len(values) for values in per_class.values() if values]
    return sum(means) / len(means) if means else float("nan")
