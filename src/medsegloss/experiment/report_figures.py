"""The report's figures: validation curves, test Dice boxes and prediction overlays on the test
slices where the losses disagree most. Drawn by :mod:`medsegloss.experiment.plots`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from medsegloss._io import read_jsonl


def validation_value(record: dict, metric: str = "dice") -> float:
    """The foreground mean of ``metric`` in one metrics.jsonl line's ``"val"`` summary.

    Accepts the summary as rows (``[{"class", "metric", "mean", ...}]``), as ``{metric: {"mean":
    ...}}`` / ``{metric: value}``, or as rows ``[{"class", metric: {"mean": ...}}]``.
    """
    val = record.get("val")
    values = []
    if isinstance(val, dict):
        item = val.get(metric)
        values = [item.get("mean") if isinstance(item, dict) else item]
    elif isinstance(val, list):
        for row in val:
            if row.get("metric") == metric:
                values.append(row.get("mean"))
            elif isinstance(row.get(metric), dict):
                values.append(row[metric].get("mean"))
            elif isinstance(row.get(metric), (int, float)):
                values.append(row[metric])
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(values) / len(values) if values else math.nan


def validation_curves(runs: list) -> dict:
    curves: dict[tuple, list] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        records = read_jsonl(run.path / "metrics.jsonl")
        if records:
            epochs = [record.get("epoch", i + 1) for i, record in enumerate(records)]
            values = [record["val_dice"] if record.get("val_dice") is not None else validation_value(record)
                      for record in records]
            curves.setdefault((run.dataset, run.loss), []).append((epochs, values))
    return curves


def overlay_panels(runs: list, losses, count: int = 4) -> tuple[list[dict], dict, list[str]]:
    """The ``count`` test slices where the losses' predictions disagree most (largest spread of
    per-slice Dice across losses; then most pixels on which they differ), one seed's runs."""
    import torch

    from medsegloss.experiment.config import Config
    from medsegloss.experiment.train import labels_from_logits, load_checkpoint, make_dataset, predict_logits

    seed = min(run.seed for run in runs)
    by_loss = {run.loss: run for run in runs if run.seed == seed and (run.path / "best.pt").exists()}
    losses = [loss for loss in losses if loss in by_loss]
    if not losses:
        return [], {}, []
    first = by_loss[losses[0]]
    dataset = make_dataset(Config.from_dict(first.config), "test", split_file=first.path / "split.json")
    items = [dataset[i] for i in range(len(dataset))]
    if not items or items[0]["image"].ndim != 3:  # overlays of 2-D slices only
        return [], {}, []
    images = torch.stack([item["image"] for item in items])
    labels = [item["label"].numpy() for item in items]
    predictions, dice = {}, {}
    for loss in losses:
        model, _ = load_checkpoint(by_loss[loss].path / "best.pt")
        predictions[loss] = torch.cat([labels_from_logits(predict_logits(model, images[i:i + 32]))
                                       for i in range(0, len(items), 32)]).cpu().numpy()
        dice[loss] = _dice_on_present_classes(predictions[loss], labels, dataset.num_classes)
    chosen = most_disagreeing(items, [predictions[loss] for loss in losses], [dice[loss] for loss in losses], count)
    panels = [{"image": items[i]["image"][0].numpy(), "label": labels[i],
               "predictions": {loss: predictions[loss][i] for loss in losses},
               "dice": {loss: float(dice[loss][i]) for loss in losses},
               "name": f"{items[i]['case']}" + (f" slice {items[i]['slice']}" if items[i].get("slice", -1) >= 0 else "")}
              for i in chosen]
    return panels, {"seed": seed}, list(getattr(dataset, "class_names", []))


def _dice_on_present_classes(predictions, labels: list, num_classes: int) -> np.ndarray:
    """Per item, the mean Dice over the classes present in its ground truth (NaN where none is):
    on a class absent from it, Dice jumps between 0 and 1 with a single pixel, which says little
    about the loss."""
    from medsegloss import metrics

    rows = metrics.evaluate(list(predictions), labels, num_classes, metrics=("dice",),
                            case_ids=[str(i) for i in range(len(labels))])
    per_item = np.full(len(labels), np.nan)
    for i, label in enumerate(labels):
        present = set(np.unique(label).tolist()) - {0}
        values = [r["dice"] for r in rows if r["case"] == str(i) and r["class"] in present
                  and r["dice"] is not None and math.isfinite(r["dice"])]
        per_item[i] = np.mean(values) if values else np.nan
    return per_item


def most_disagreeing(items, predictions, dice, count: int) -> list[int]:
    """Indices of the ``count`` items with the largest spread (max - min) of Dice across losses,
    ties broken by the share of pixels where the predictions differ; items where the ground truth
    shows a structure, and one item per case, first."""
    import warnings

    stacked = np.stack(predictions)  # (losses, items, H, W)
    differing = (stacked != stacked[:1]).any(0).reshape(len(items), -1).mean(1)
    with warnings.catch_warnings():  # an item with no defined Dice (all empty) has spread 0
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nan_to_num(np.nanmax(np.stack(dice), 0) - np.nanmin(np.stack(dice), 0))
    has_dice = ~np.all(np.isnan(np.stack(dice)), 0)  # slices showing some ground truth first
    order = sorted(range(len(items)), key=lambda i: (not has_dice[i], -spread[i], -differing[i]))
    chosen, cases = [], set()
    for i in order:  # the best item of each case first, so the rows show different cases
        if items[i]["case"] not in cases:
            chosen.append(i)
            cases.add(items[i]["case"])
    chosen = chosen[:count]
    chosen += [i for i in order if i not in chosen][:count - len(chosen)]
    return sorted(chosen, key=order.index)


def write_figures(results: dict, runs: list, dest: Path, overlays: bool = True) -> dict[str, Path]:
    """Write the PNG figures into ``dest/figures``; returns {title: path}. Overlays need the runs'
    ``best.pt`` and the data; when those fail the reason is printed and the rest is kept."""
    from medsegloss.experiment import plots

    datasets, losses = results["datasets"], results["losses"]
    figures = {}
    curves = validation_curves(runs)
    if curves:
        figures["Validation Dice per epoch"] = plots.validation_curves(
            curves, datasets, losses, dest / "figures" / "validation_curves.png")
    if "dice" in results["metrics"]:
        values: dict[tuple, list] = {}
        for row in results["cases"]:
            values.setdefault((row["dataset"], row["loss"]), []).append(
                math.nan if row["dice"] is None else row["dice"])
        figures["Test Dice per case"] = plots.dice_boxes(values, datasets, losses, dest / "figures" / "dice_boxes.png")
    for dataset in datasets if overlays else []:
        try:
            panels, info, class_names = overlay_panels([r for r in runs if r.dataset == dataset], losses)
        except Exception as error:  # a figure must not cost the whole report; say why it is missing
            print(f"report: no overlays for {dataset}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        if panels:
            figures[f"Predictions on {dataset}"] = plots.overlays(
                panels, [loss for loss in losses if loss in panels[0]["predictions"]],
                dest / "figures" / f"overlays_{dataset}.png", class_names=class_names,
                title=f"{dataset}, seed {info['seed']}: test slices where the losses disagree most")
    return figures
