"""Surface metrics: medsegloss vs medpy, MONAI and DeepMind's surface-distance, side by side.

    python benchmarks/metrics.py            # about two minutes on a 2-core VM
    python benchmarks/metrics.py --quick    # fewer repeats

Each case times HD95, ASSD and the surface Dice (NSD) of one prediction/reference pair per
library, interleaved (every repeat runs every library once, in turn) and reports the minimum
over repeats, then the fastest peer's time divided by ours. Values are printed next to each other
and checked where the definitions match: medpy's hd95 pools both directions (ours with
``pooled=True``), MONAI's takes the larger directed 95th percentile (our default), and both
define ASSD as the pooled mean, as we do. surface-distance measures surfels weighted by area,
a different (also valid) definition, so its values are shown but not compared.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from medsegloss import metrics

TOLERANCE = 2.0  # NSD tolerance in mm


def organ_pair(shape, spacing, seed, shift=0):
    """A smooth organ-like reference and a prediction with a wavy boundary, a small spurious blob
    and a missed chunk (the errors a segmentation network makes), optionally shifted."""
    rng = np.random.default_rng(seed)
    physical = [np.linspace(-1, 1, n) * n * s / 2 for n, s in zip(shape, spacing)]
    grid = np.meshgrid(*physical, indexing="ij")
    extent = min(n * s for n, s in zip(shape, spacing))
    radius = np.sqrt(sum((g / (0.32 * extent * f)) ** 2 for g, f in zip(grid, (1.0, 0.8, 1.2)[: len(shape)])))

    def wave(amplitude, sigma):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        return amplitude * noise / noise.std()

    ref = radius + wave(0.12, 8) < 1
    pred = radius + wave(0.12, 8) * 0.3 + wave(0.05, 3) < 1 - 0.03
    spurious = np.sqrt(sum((g - 0.6 * extent / 2) ** 2 for g in grid)) < 0.05 * extent
    missed = np.sqrt(sum((g + 0.25 * extent) ** 2 for g in grid)) < 0.12 * extent
    pred = (pred | spurious) & ~missed
    if shift:
        pred = np.roll(pred, shift, axis=-1)
    return pred, ref


def implementations(spacing):
    """name -> {metric -> function(pred, ref)}; each returns one float."""
    warnings.filterwarnings("ignore")
    out = {"medsegloss": {
        "hd95": lambda p, r: metrics.hd95(p, r, spacing),
        "hd95_pooled": lambda p, r: metrics.hd95(p, r, spacing, pooled=True),
        "assd": lambda p, r: metrics.assd(p, r, spacing),
        "nsd": lambda p, r: metrics.nsd(p, r, spacing, tolerance=TOLERANCE),
    }}
    try:
        from medpy.metric import binary

        out["medpy"] = {
            "hd95_pooled": lambda p, r: binary.hd95(p, r, spacing),
            "assd": lambda p, r: binary.assd(p, r, spacing),
        }
    except ImportError:
        print("medpy not installed: skipped")
    try:
        from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

        def one_hot(mask):
            return torch.from_numpy(np.stack([~mask, mask])[None])

        out["monai"] = {
            "hd95": lambda p, r: float(compute_hausdorff_distance(one_hot(p), one_hot(r), percentile=95,
                                                                  spacing=spacing)),
            "assd": lambda p, r: float(compute_average_surface_distance(one_hot(p), one_hot(r), symmetric=True,
                                                                        spacing=spacing)),
            "nsd": lambda p, r: float(compute_surface_dice(one_hot(p), one_hot(r), [TOLERANCE], spacing=spacing)),
        }
    except ImportError:
        print("monai not installed: skipped")
    try:
        import surface_distance as deepmind

        def deepmind_assd(p, r):
            forward, backward = deepmind.compute_average_surface_distance(
                deepmind.compute_surface_distances(r, p, spacing))
            return (forward + backward) / 2

        out["surface-distance"] = {
            "hd95": lambda p, r: deepmind.compute_robust_hausdorff(deepmind.compute_surface_distances(r, p, spacing), 95),
            "assd": deepmind_assd,
            "nsd": lambda p, r: deepmind.compute_surface_dice_at_tolerance(
                deepmind.compute_surface_distances(r, p, spacing), TOLERANCE),
        }
    except ImportError:
        print("surface-distance not installed (pip install surface-distance): skipped")
    return out


def dense_edt_variant(pred, ref, spacing):
    """The obvious alternative, for the record: two exact EDTs over the cropped box."""
    import edt

    from medsegloss.distance import bounding_box, surface

    box = bounding_box(pred, ref)
    pred_surface, ref_surface = surface(pred[box]), surface(ref[box])
    forward = edt.edt(~ref_surface, anisotropy=spacing)[pred_surface]
    backward = edt.edt(~pred_surface, anisotropy=spacing)[ref_surface]
    return float(np.concatenate([forward, backward]).mean())


def run_case(title, pairs, spacing, repeats):
    """Time every implementation on every pair, interleaved; min over repeats of the summed time."""
    libraries = implementations(spacing)
    libraries["medsegloss"]["assd (dense EDT variant)"] = lambda p, r: dense_edt_variant(p, r, spacing)
    best, values = {}, {}
    for repeat in range(repeats):
        for library, functions in libraries.items():
            if library == "medpy" and repeat >= max(2, repeats // 3):
                continue  # seconds per call: a few repeats are enough for its minimum
            for metric, function in functions.items():
                start = time.perf_counter()
                results = [function(p, r) for p, r in pairs]
                elapsed = time.perf_counter() - start
                key = (library, metric)
                best[key] = min(best.get(key, np.inf), elapsed)
                values[key] = results[0]
    print(f"\n### {title}")
    print("| metric | medsegloss | medpy | MONAI | surface-distance | fastest peer ÷ medsegloss |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("hd95 (max of directed P95)", "hd95", "hd95"), ("hd95 pooled (medpy)", "hd95_pooled", "hd95_pooled"),
            ("assd", "assd", "assd"), (f"nsd @ {TOLERANCE} mm", "nsd", "nsd")]
    for label, ours_key, peer_key in rows:
        ours = best[("medsegloss", ours_key)]
        cells, peers = [], []
        for library in ("medpy", "monai", "surface-distance"):
            key = (library, peer_key if library != "medpy" else ours_key)
            if key in best and (library != "surface-distance" or ours_key != "hd95_pooled"):
                cells.append(f"{best[key] * 1e3:.1f} ms<br>{values[key]:.6f}")
                peers.append(best[key])
            else:
                cells.append("—")
        ratio = f"{min(peers) / ours:.1f}×" if peers else "—"
        print(f"| {label} | {ours * 1e3:.1f} ms<br>{values[('medsegloss', ours_key)]:.6f} | " + " | ".join(cells)
              + f" | {ratio} |")
    variant = ("medsegloss", "assd (dense EDT variant)")
    print(f"(dense-EDT variant of our assd: {best[variant] * 1e3:.1f} ms, value {values[variant]:.6f})")
    return values


def check_agreement(values):
    """Same definitions must give the same numbers (to 1e-5 relative: MONAI works in float32)."""
    checks = [(("medpy", "hd95_pooled"), ("medsegloss", "hd95_pooled")), (("medpy", "assd"), ("medsegloss", "assd")),
              (("monai", "hd95"), ("medsegloss", "hd95")), (("monai", "assd"), ("medsegloss", "assd")),
              (("monai", "nsd"), ("medsegloss", "nsd")),
              (("medsegloss", "assd (dense EDT variant)"), ("medsegloss", "assd"))]
    for peer, ours in checks:
        if peer in values and not np.isclose(values[peer], values[ours], rtol=1e-5, atol=1e-6):
            raise SystemExit(f"MISMATCH {peer}: {values[peer]!r} vs {ours}: {values[ours]!r}")
    print("values agree where the definitions match (rtol 1e-5)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; min of {repeats} interleaved repeats "
          "(medpy: fewer); each cell: time and value")

    spacing3 = (1.0, 1.0, 2.5)
    pred, ref = organ_pair((160, 160, 96), spacing3, seed=0)
    print(f"3-D volume 160x160x96, spacing {spacing3}: reference {ref.sum()} voxels, prediction {pred.sum()}, "
          f"dice {metrics.dice(pred, ref):.3f}")
    check_agreement(run_case("3-D volume 160×160×96, spacing (1, 1, 2.5) mm", [(pred, ref)], spacing3, repeats))

    shifted, ref = organ_pair((160, 160, 96), spacing3, seed=0, shift=4)
    check_agreement(run_case("3-D, the same prediction shifted by 4 voxels (10 mm) along z: far surfaces",
                             [(shifted, ref)], spacing3, repeats))

    spacing2 = (0.8, 0.8)
    slices = [organ_pair((256, 256), spacing2, seed=s) for s in range(16)]
    check_agreement(run_case("2-D: 16 slices of 256×256, spacing (0.8, 0.8) mm (time for all 16; values of the "
                             "first)", slices, spacing2, repeats))
    overlap_case(repeats)


def overlap_case(repeats):
    """Dice, IoU and pixel error of a 4-label volume: one confusion matrix (evaluate) vs MONAI's
    one-hot + compute_dice + compute_iou."""
    rng = np.random.default_rng(1)
    shape = (160, 160, 96)
    target = np.zeros(shape, np.int64)
    for label, seed in zip((1, 2, 3), (0, 1, 2)):
        pred_mask, ref_mask = organ_pair(shape, (1.0, 1.0, 2.5), seed=seed)
        target[ref_mask & (target == 0)] = label
    pred = target.copy()
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2)
    noise = noise > 2.0 * noise.std()  # ~2 % of voxels, in small clumps, get the next label
    pred[noise] = (pred[noise] + 1) % 4
    pred_t, target_t = torch.from_numpy(pred)[None], torch.from_numpy(target)[None]
    names = ("dice", "iou", "pixel_error")
    candidates = {"medsegloss evaluate (dice, iou, pixel_error)": lambda: metrics.evaluate(pred_t, target_t, 4,
                                                                                         metrics=names)}
    try:
        from monai.metrics import compute_dice, compute_iou
        from monai.networks.utils import one_hot

        def monai_overlap():
            p, t = one_hot(pred_t[:, None], 4), one_hot(target_t[:, None], 4)
            return compute_dice(p, t, include_background=False), compute_iou(p, t, include_background=False)

        candidates["MONAI one_hot + compute_dice + compute_iou"] = monai_overlap
    except ImportError:
        pass
    best = {}
    for _ in range(repeats):
        for name, function in candidates.items():
            start = time.perf_counter()
            result = function()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - start)
            if name.startswith("MONAI"):
                monai_dice = result[0].flatten().tolist()
            else:
                ours = [row["dice"] for row in result]
    print("\n### Overlap metrics of a 4-label 160×160×96 volume (3 foreground classes)")
    for name, seconds in best.items():
        print(f"- {name}: {seconds * 1e3:.1f} ms")
    if len(best) > 1:
        print(f"- Dice ours {np.round(ours, 6).tolist()} vs MONAI {np.round(monai_dice, 6).tolist()}")
        if not np.allclose(ours, monai_dice, rtol=1e-5):
            raise SystemExit("MISMATCH in Dice")


if __name__ == "__main__":
    main()
