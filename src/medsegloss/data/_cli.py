"""`medsegloss datasets`: list the datasets, their classes and options; `--preview` draws samples."""

from __future__ import annotations

import argparse
import inspect


def _options(name: str) -> str:
    from medsegloss.data import loader

    parameters = inspect.signature(loader(name)).parameters.values()
    return ", ".join(f"{p.name}={p.default!r}" for p in parameters if p.kind == p.KEYWORD_ONLY)


def preview(names, out, *, roots=None, size: int = 192, per_dataset: int = 4, seed: int = 0) -> None:
    """A PNG grid: ``per_dataset`` labelled slices of each dataset (image, label outlines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from medsegloss.data import get_dataset

    roots = roots or {}
    colours = ["#ff4040", "#ffd000", "#30d0ff", "#60ff60"]
    fig, axes = plt.subplots(len(names), per_dataset, figsize=(2.6 * per_dataset, 2.75 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        options = {"num_cases": 8} if name.startswith("phantom-") else {}  # 8 cases are plenty to show
        dataset = get_dataset(name, roots.get(name), split="all", size=size, seed=seed, **options)
        # slices with every class present if possible, spread over different cases
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(dataset))
        chosen, seen_cases = [], set()
        for need_all in (True, False):
            for index in order:
                item = dataset[int(index)]
                present = len(item["label"].unique())
                if item["case"] in seen_cases or (need_all and present < dataset.num_classes):
                    continue
                chosen.append(item)
                seen_cases.add(item["case"])
                if len(chosen) == per_dataset:
                    break
            if len(chosen) == per_dataset:
                break
        for column in range(per_dataset):
            axis = axes[row, column]
            axis.set_xticks([]), axis.set_yticks([])
            if column >= len(chosen):
                continue
            item = chosen[column]
            axis.imshow(item["image"][0].numpy(), cmap="gray", interpolation="nearest")
            label = item["label"].numpy()
            for k in range(1, dataset.num_classes):
                if (label == k).any():
                    axis.contour(label == k, levels=[0.5], colors=[colours[(k - 1) % len(colours)]], linewidths=0.8)
            axis.set_title(f"{name}\n{item['case']} slice {item['slice']}", fontsize=8)
        names_text = ", ".join(f"{k}={n}" for k, n in enumerate(dataset.class_names) if k)
        axes[row, 0].set_ylabel(names_text, fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss datasets", description="List the datasets.")
    parser.add_argument("--options", action="store_true", help="also print each dataset's options and defaults")
    parser.add_argument("--preview", metavar="PNG", help="draw sample slices with label outlines to this PNG")
    parser.add_argument("--names", nargs="+", default=["phantom-lesion", "phantom-cardiac", "mni152-tissue"],
                        help="datasets to preview (default: the ones that need no download)")
    parser.add_argument("--root", action="append", default=[], metavar="NAME=PATH", help="root of a dataset to preview")
    args = parser.parse_args(argv)

    from medsegloss.data import available, info

    if args.preview:
        roots = dict(item.split("=", 1) for item in args.root)
        preview(args.names, args.preview, roots=roots)
        print(f"wrote {args.preview}")
        return 0
    rows = [(name, ", ".join(info(name).class_names) or "(from the masks)",
             "needs root" if info(name).needs_root else "no root", info(name).description) for name in available()]
    header = ("name", "classes", "root", "description")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3])
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[3])
        if args.options:
            print(" " * (sum(widths) + 6) + _options(row[0]))
    return 0
