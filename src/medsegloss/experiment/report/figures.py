"""The report's figures (matplotlib, Agg backend, written atomically as PNG): what each shows,
drawn from plain arrays and dicts, and the reading of runs and checkpoints they need.

- validation Dice per optimizer step, one panel per dataset, one line per loss (the mean over seeds, with
  the seeds' range shaded);
- per-case test Dice per loss, one panel per dataset (a dot per seed and case);
- image, ground truth and each loss's prediction on the test slices where the losses disagree
  most (the runs' ``best.pt`` through :mod:`medsegloss.experiment.inference`).
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np

from medsegloss import _io

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


def plain_text(plot):
    """Decorator: ``plot`` draws every text as it is, with mathtext (``$...$``) and TeX off, so
    a loss, dataset, class or case name such as ``p$\\foo{$.png`` is a label, not a formula
    that fails to parse."""
    import functools

    @functools.wraps(plot)
    def plot_plainly(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return plot(*args, **kwargs)

    return plot_plainly


def printable(text) -> str:
    """A name as text a font can draw: bytes of a file name that were not UTF-8 (which Python
    decodes to lone surrogates) become U+FFFD, so such a case name cannot drop a figure."""
    try:
        return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate of another origin
        return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _save(figure, path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return _io.write_bytes(path, buffer.getvalue())


def _panels(count: int, width: float, height: float):
    plt = _pyplot()
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return figure, list(axes[0])


@plain_text
def plot_validation_curves(curves: dict, datasets, losses, path, metric_label: str = "validation Dice") -> Path:
    """``curves[(dataset, loss)]``: a list over seeds of ``(epochs, values)`` arrays."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = _panels(len(datasets), 4.6, 3.4)
    colors = loss_colors(losses)
    for axis, dataset in zip(axes, datasets):
        for loss in losses:
            seeds = curves.get((dataset, loss), [])
            if not seeds:
                continue
            length = min(len(steps) for steps, _ in seeds)
            steps = np.asarray(seeds[0][0][:length], dtype=float)
            values = np.asarray([v[:length] for _, v in seeds], dtype=float)
            with np.errstate(all="ignore"):
                mean = np.nanmean(values, axis=0)
            axis.plot(steps, mean, color=colors[loss], label=loss, linewidth=1.6)
            if len(seeds) > 1:
                axis.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                  color=colors[loss], alpha=0.15, linewidth=0)
        axis.set_title(dataset)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(metric_label)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                  bbox_to_anchor=(0.5, -0.02 - 0.05 * ((len(labels) - 1) // 6)))
    figure.suptitle(f"{metric_label} per step (line: mean over seeds; band: min–max)", fontsize=10)
    figure.tight_layout(rect=(0, 0.08 + 0.05 * ((len(labels) - 1) // 6), 1, 1))
    return _save(figure, path)


@plain_text
def plot_dice_boxes(values: dict, datasets, losses, path, metric_label: str = "test Dice per case") -> Path:
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


@plain_text
def plot_differences(results: dict, path) -> Path:
    """Per dataset, the primary metric's mean difference of each loss to the baseline with its 95 %
    interval, against the grey ±margin band of practical equivalence (the verdict drawn)."""
    metric, baseline = results["primary_metric"], results["baseline"]
    datasets = results["datasets"]
    tests = [t for t in results["tests"] if t["metric"] == metric]
    losses = [loss for loss in results["losses"] if loss != baseline]
    figure, axes = _panels(len(datasets), 4.2, 0.45 * len(losses) + 1.4)
    colors = {"better": "#1a7f37", "worse": "#cf222e", "equivalent": "#0550ae", "inconclusive": "#6e7781"}
    margin = results["margins"][metric]
    for axis, dataset in zip(axes, datasets):
        rows = {t["loss"]: t for t in tests if t["dataset"] == dataset}
        axis.axvspan(-margin, margin, color="#d0d7de", alpha=0.6, linewidth=0)
        axis.axvline(0, color="black", linewidth=0.8)
        for y, loss in enumerate(losses):
            row = rows.get(loss)
            if row is None or row["mean_difference"] is None:
                continue
            color = colors.get(row["verdict"], "#6e7781")
            if row["ci_low"] is not None:
                axis.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, linewidth=2)
            axis.plot([row["mean_difference"]], [y], "o", color=color)
            axis.annotate(row["verdict"], (row["mean_difference"], y), textcoords="offset points", xytext=(0, 6),
                          ha="center", fontsize=7, color=color)
        axis.set_yticks(range(len(losses)))
        axis.set_yticklabels(losses)
        axis.set_ylim(-0.7, len(losses) - 0.3)
        axis.invert_yaxis()
        axis.set_title(dataset)
        axis.set_xlabel(f"{metric}: loss − {baseline}")
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle(f"mean difference with 95 % interval; grey: ±{margin:g}, practically equivalent", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


@plain_text
def plot_rank_blobs(ranking: dict, datasets, losses, path) -> Path:
    """challengeR's blob plot: per dataset, a disc for each (loss, rank) whose area is the share
    of bootstrap draws that put the loss at that rank; the cross marks the rank on all the data."""
    shown = [d for d in datasets if ranking.get(d)]
    figure, axes = _panels(len(shown), max(3.2, 0.6 * len(losses) + 1.4), 3.4)
    colors = loss_colors(losses)
    for axis, dataset in zip(axes, shown):
        entries = ranking[dataset]["losses"]
        present = [loss for loss in losses if loss in entries]
        for x, loss in enumerate(present):
            shares = entries[loss]["shares"]
            ranks = np.arange(1, len(shares) + 1)
            axis.scatter(np.full(len(shares), x), ranks, s=400 * np.asarray(shares), color=colors[loss], alpha=0.6)
            axis.plot([x], [entries[loss]["rank"]], "kx")
        axis.set_xticks(range(len(present)))
        axis.set_xticklabels(present, rotation=30, ha="right")
        axis.set_yticks(range(1, len(present) + 1))
        axis.set_ylim(len(present) + 0.6, 0.4)
        axis.set_ylabel("rank")
        tau = ranking[dataset]["kendall_tau"]
        axis.set_title(f"{dataset} (τ {tau:.2f})" if tau is not None else f"{dataset} (all tied)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"bootstrap rank shares on {ranking[shown[0]]['metric']} (units, then seeds, resampled); τ: median Kendall τ to the full ranking", fontsize=9)
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


@plain_text
def plot_overlays(panels: list[dict], losses, path, title: str = "", class_names=None) -> Path:
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
                axis.set_title(printable(name), fontsize=8)
            if column == 0:
                axis.set_ylabel(printable(panel.get("name", "")), fontsize=7)
    if class_names:
        from matplotlib.patches import Patch

        handles = [Patch(color=LABEL_COLORS[(i - 1) % len(LABEL_COLORS)], label=printable(name))
                   for i, name in enumerate(class_names) if i > 0]
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    if title:
        figure.suptitle(printable(title), fontsize=9)
    figure.tight_layout(rect=(0, 0.04 if class_names else 0, 1, 1))
    return _save(figure, path)


# ---------------------------------------------------------------- the report's figures from its runs
def validation_curves(runs: list) -> dict:
    """``{(dataset, loss): [(steps, validation Dice) per seed]}`` from the runs' metrics.jsonl (the
    budget is counted in optimizer steps; a record without ``step`` counts by its position)."""
    curves: dict[tuple, list] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        records = _io.read_jsonl(run.path / "metrics.jsonl")
        if records:
            steps = [record.get("step", i + 1) for i, record in enumerate(records)]
            values = [math.nan if record.get("val_dice") is None else record["val_dice"] for record in records]
            curves.setdefault((run.dataset, run.loss), []).append((steps, values))
    return curves


def overlay_panels(runs: list, losses, count: int = 4) -> tuple[list[dict], dict, list[str]]:
    """The ``count`` test slices where the losses' predictions disagree most (largest spread of
    per-slice Dice across losses; then most pixels on which they differ), one seed's runs."""
    import torch

    from medsegloss import data
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.inference import labels_from_logits, load_checkpoint, predict_logits

    seed = min(run.seed for run in runs)
    fold = min((run.fold for run in runs if run.seed == seed and run.fold is not None), default=None)

    def tested(run):  # the checkpoint the run's test metrics come from
        return run.path / ("last.pt" if run.config.get("select") == "last" else "best.pt")

    by_loss = {run.loss: run for run in runs if run.seed == seed and run.fold == fold and tested(run).exists()}
    losses = [loss for loss in losses if loss in by_loss]
    if not losses:
        return [], {}, []
    first = by_loss[losses[0]]
    config = Config.from_dict(first.config)
    dataset = data.get_dataset(config.dataset, split="test", **config.dataset_arguments(first.path / "split.json"))
    items = [dataset[i] for i in range(len(dataset))]
    if not items or items[0]["image"].ndim != 3:  # overlays of 2-D slices only
        return [], {}, []
    images = torch.stack([item["image"] for item in items])
    labels = [item["label"].numpy() for item in items]
    predictions, dice = {}, {}
    for loss in losses:
        model, _ = load_checkpoint(tested(by_loss[loss]))
        predictions[loss] = torch.cat([labels_from_logits(predict_logits(model, images[i:i + 32]))
                                       for i in range(0, len(items), 32)]).cpu().numpy()
        dice[loss] = _dice_on_present_classes(predictions[loss], labels, dataset.num_classes)
    chosen = most_disagreeing(items, [predictions[loss] for loss in losses], [dice[loss] for loss in losses], count)
    panels = [{"image": items[i]["image"][0].numpy(), "label": labels[i],
               "predictions": {loss: predictions[loss][i] for loss in losses},
               "dice": {loss: float(dice[loss][i]) for loss in losses},
               "name": f"{items[i]['case']}" + (f" slice {items[i]['slice']}" if items[i].get("slice", -1) >= 0 else "")}
              for i in chosen]
    return panels, {"seed": seed, "fold": fold}, list(dataset.class_names)


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


def figure_file_name(prefix: str, name: str) -> str:
    """``overlays_<name>.png`` with ``name`` reduced to folder-safe characters (a dataset name
    such as ``../x`` cannot leave the figures folder)."""
    import re

    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_.+=,-]', '_', name).strip('.') or '_'}.png"


def _draw(figures: dict, title: str, draw) -> None:
    """``figures[title] = draw()``; a failure is printed, naming the figure, and the report goes on."""
    try:
        figures[title] = draw()
    except Exception as error:  # a figure must not cost the whole report; say why it is missing
        print(f"report: no figure {title!r}: {_one_line(error)}", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    """``Type: first line of the message``: some libraries' messages are many lines long."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def write_figures(results: dict, runs: list, dest: Path, overlays: bool = True) -> dict[str, Path]:
    """Write the PNG figures into ``dest/figures``; returns {title: path}. Overlays need the runs'
    ``best.pt`` and the data; when a figure fails the reason is printed and the rest is kept.

    Names a user chose (losses, datasets, classes, cases) are drawn as plain text
    (:func:`plain_text`); file names of figures hold only folder-safe characters."""
    dest = Path(dest)
    datasets, losses = results["datasets"], results["losses"]
    figures: dict[str, Path] = {}
    curves = validation_curves(runs)
    if curves:
        _draw(figures, "Validation Dice per step", lambda: plot_validation_curves(
            curves, datasets, losses, dest / "figures" / "validation_curves.png"))
    if "dice" in results["metrics"]:
        values: dict[tuple, list] = {}
        for row in results["cases"]:
            values.setdefault((row["dataset"], row["loss"]), []).append(
                math.nan if row["dice"] is None else row["dice"])
        _draw(figures, "Test Dice per case",
              lambda: plot_dice_boxes(values, datasets, losses, dest / "figures" / "dice_boxes.png"))
    if results.get("tests"):
        _draw(figures, "Differences to the baseline", lambda: plot_differences(
            results, dest / "figures" / "differences.png"))
    if any(results.get("ranking", {}).values()):
        _draw(figures, "Ranking uncertainty", lambda: plot_rank_blobs(
            results["ranking"], datasets, losses, dest / "figures" / "rank_blobs.png"))
    for dataset in datasets if overlays else []:
        try:
            panels, info, class_names = overlay_panels([r for r in runs if r.dataset == dataset], losses)
        except Exception as error:  # a figure must not cost the whole report; say why it is missing
            print(f"report: no overlays for {dataset}: {_one_line(error)}", file=sys.stderr)
            continue
        if panels:
            _draw(figures, f"Predictions on {dataset}", lambda: plot_overlays(
                panels, [loss for loss in losses if loss in panels[0]["predictions"]],
                dest / "figures" / figure_file_name("overlays", dataset), class_names=class_names,
                title=f"{dataset}, seed {info['seed']}" + (f" fold {info['fold']}" if info.get("fold") is not None else "")
                      + ": test slices where the losses disagree most"))
    return figures
