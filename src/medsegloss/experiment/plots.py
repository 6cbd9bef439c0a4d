"""The report's figures (matplotlib, Agg backend, written atomically as PNG).

- :func:`validation_curves`: validation Dice per epoch, one panel per dataset, one line per loss
  (the mean over seeds, with the seeds' range shaded);
- :func:`dice_boxes`: per-case test Dice per loss, one panel per dataset (a dot per seed and case);
- :func:`overlays`: image, ground truth and each loss's prediction on the same slices.

The functions take plain arrays and dicts; reading runs and checkpoints is the report's job.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medsegloss._io import write_bytes

__all__ = ["validation_curves", "dice_boxes", "overlays", "loss_colors"]

# label colours of the overlays (class 1, 2, 3, ...): colour-blind friendly (Okabe-Ito)
LABEL_COLORS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_colors(losses) -> dict[str, str]:
    """One stable colour per loss (matplotlib's tab10 cycle in the given order)."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {loss: palette[i % len(palette)] for i, loss in enumerate(losses)}


def _save(figure, path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return write_bytes(path, buffer.getvalue())


def _panels(count: int, width: float, height: float):
    plt = _pyplot()
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return figure, list(axes[0])


def validation_curves(curves: dict, datasets, losses, path, metric_label: str = "validation Dice") -> Path:
    """``curves[(dataset, loss)]``: a list over seeds of ``(epochs, values)`` arrays."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = _panels(len(datasets), 4.6, 3.4)
    colors = loss_colors(losses)
    for axis, dataset in zip(axes, datasets):
        for loss in losses:
            seeds = curves.get((dataset, loss), [])
            if not seeds:
                continue
            length = min(len(epochs) for epochs, _ in seeds)
            epochs = np.asarray(seeds[0][0][:length], dtype=float)
            values = np.asarray([v[:length] for _, v in seeds], dtype=float)
            with np.errstate(all="ignore"):
                mean = np.nanmean(values, axis=0)
            axis.plot(epochs, mean, color=colors[loss], label=loss, linewidth=1.6)
            if len(seeds) > 1:
                axis.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                  color=colors[loss], alpha=0.15, linewidth=0)
        axis.set_title(dataset)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric_label)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                  bbox_to_anchor=(0.5, -0.02 - 0.05 * ((len(labels) - 1) // 6)))
    figure.suptitle(f"{metric_label} per epoch (line: mean over seeds; band: min–max)", fontsize=10)
    figure.tight_layout(rect=(0, 0.08 + 0.05 * ((len(labels) - 1) // 6), 1, 1))
    return _save(figure, path)


def dice_boxes(values: dict, datasets, losses, path, metric_label: str = "test Dice per case") -> Path:
    """``values[(dataset, loss)]``: the per-(seed, case) values of one metric."""
    figure, axes = _panels(len(datasets), max(3.2, 0.75 * len(losses) + 1.4), 3.6)
    colors = loss_colors(losses)
    generator = np.random.default_rng(0)  # jitter of the dots: fixed, so reruns give the same figure
    for axis, dataset in zip(axes, datasets):
        present = [loss for loss in losses if len(values.get((dataset, loss), []))]
        data = [np.asarray(values[(dataset, loss)], dtype=float) for loss in present]
        data = [d[~np.isnan(d)] for d in data]
        boxes = axis.boxplot(data, showfliers=False, widths=0.55, patch_artist=True,
                             medianprops={"color": "black"})
        for patch, loss in zip(boxes["boxes"], present):
            patch.set_facecolor(colors[loss])
            patch.set_alpha(0.35)
        for i, (loss, d) in enumerate(zip(present, data), start=1):
            axis.scatter(i + generator.uniform(-0.15, 0.15, d.size), d, s=7, color=colors[loss],
                         alpha=0.7, linewidths=0)
        axis.set_xticks(range(1, len(present) + 1))
        axis.set_xticklabels(present, rotation=30, ha="right")
        axis.set_title(dataset)
        axis.set_ylabel(metric_label)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("box: quartiles and median; dots: one per (seed, test case)", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def _label_rgba(labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """An RGBA image colouring each foreground label; background transparent."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros(labels.shape + (4,), dtype=float)
    for label in np.unique(labels):
        if label > 0:
            rgba[labels == label] = to_rgba(LABEL_COLORS[(int(label) - 1) % len(LABEL_COLORS)], alpha)
    return rgba


def overlays(panels: list[dict], losses, path, title: str = "", class_names=None) -> Path:
    """A grid: one row per slice; columns image, ground truth, then each loss's prediction.

    ``panels``: dicts ``{"image": (H, W) float, "label": (H, W) int, "predictions": {loss:
    (H, W) int}, "name": str (row title), "dice": {loss: float} (optional, shown per panel)}``.
    """
    plt = _pyplot()
    columns = ["image", "ground truth"] + list(losses)
    size = 1.9
    figure, axes = plt.subplots(len(panels), len(columns), figsize=(size * len(columns), size * len(panels) + 0.6),
                                squeeze=False)
    for row, panel in enumerate(panels):
        image = np.asarray(panel["image"], dtype=float)
        for column, name in enumerate(columns):
            axis = axes[row][column]
            axis.imshow(image, cmap="gray", interpolation="nearest")
            if name == "ground truth":
                axis.imshow(_label_rgba(np.asarray(panel["label"])), interpolation="nearest")
            elif name != "image":
                axis.imshow(_label_rgba(np.asarray(panel["predictions"][name])), interpolation="nearest")
                dice = panel.get("dice", {}).get(name)
                if dice is not None and np.isfinite(dice):
                    axis.text(0.03, 0.04, f"Dice {dice:.2f}", transform=axis.transAxes, color="white",
                              fontsize=7, bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "linewidth": 0})
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=8)
            if column == 0:
                axis.set_ylabel(panel.get("name", ""), fontsize=7)
    if class_names:
        from matplotlib.patches import Patch

        handles = [Patch(color=LABEL_COLORS[(i - 1) % len(LABEL_COLORS)], label=name)
                   for i, name in enumerate(class_names) if i > 0]
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0.04 if class_names else 0, 1, 1))
    return _save(figure, path)
