"""Is data loading ever the bottleneck? Items/s of every dataset's DataLoader vs a UNet step.

For each dataset at the same image size: the time to build the training split cold (generate
or decode + resize; the in-memory cache cleared) and warm (cached), the items per second of a
full DataLoader pass (batch 8, shuffled, no workers), the same with signed distance maps
attached (`WithDistanceMaps`: first pass computes them, later passes are cached), and the
fraction of a training step the loader takes: loader seconds per batch / UNet step seconds
(forward + backward + Adam, batch 8, 4 output channels, 2 threads). The file-based datasets
(acdc, covid-ct, folder) run on synthetic files of realistic sizes written to a temp folder.
Min over rounds; the machine is noisy, so compare within one run.

    python benchmarks/data.py               # 64x64 (default benchmark) and 128x128
    python benchmarks/data.py --sizes 256   # the reference experiment's size
    python benchmarks/data.py --standard    # nnunet layout: items/s at 2-D and 3-D, classes and regions
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_files(folder: Path) -> dict[str, Path]:
    """ACDC (8 patients, 2 frames of 216x256x10), COVID (2 CT volumes 512x512x48 in HU) and a
    folder of 64 PNG pictures 256x256: realistic per-file sizes, few files."""
    import nibabel
    from PIL import Image

    rng = np.random.default_rng(0)

    def nifti(path, array, zooms):
        image = nibabel.Nifti1Image(array, np.diag([*zooms, 1.0]))
        image.header.set_zooms(zooms)
        nibabel.save(image, str(path))

    for number in range(1, 9):
        patient = folder / "acdc" / "training" / f"patient{number:03d}"
        patient.mkdir(parents=True)
        (patient / "Info.cfg").write_text(f"ED: 1\nES: 9\nGroup: {['NOR', 'DCM', 'HCM', 'MINF'][number % 4]}\n")
        for frame in (1, 9):
            nifti(patient / f"patient{number:03d}_frame{frame:02d}.nii.gz",
                  rng.integers(0, 400, (216, 256, 10)).astype(np.int16), (1.56, 1.56, 10.0))
            nifti(patient / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz",
                  rng.integers(0, 4, (216, 256, 10)).astype(np.uint8), (1.56, 1.56, 10.0))
    for sub in ("ct_scans", "infection_mask"):
        (folder / "covid" / sub).mkdir(parents=True)
    for number in (1, 2):
        nifti(folder / "covid" / "ct_scans" / f"coronacases_org_{number:03d}.nii",
              rng.integers(-1024, 1500, (512, 512, 48)).astype(np.int16), (0.7, 0.7, 5.0))
        nifti(folder / "covid" / "infection_mask" / f"coronacases_{number:03d}.nii",
              (rng.random((512, 512, 48)) < 0.02).astype(np.uint8), (0.7, 0.7, 5.0))
    for sub in ("images", "masks"):
        (folder / "folder" / sub).mkdir(parents=True)
    for k in range(64):
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(folder / "folder" / "images" / f"{k}.png")
        Image.fromarray((rng.random((256, 256)) < 0.1).astype(np.uint8) * 255).save(folder / "folder" / "masks" / f"{k}.png")
    return {"acdc": folder / "acdc", "covid-ct": folder / "covid", "folder": folder / "folder"}


def epoch_seconds(dataset, batch_size: int) -> tuple[float, int]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    started, count = time.perf_counter(), 0
    for batch in loader:
        count += batch["image"].shape[0]
    return time.perf_counter() - started, count


def unet_step_seconds(size: int, base: int, depth: int, batch_size: int, rounds: int) -> float:
    from medsegloss.models import UNet

    torch.manual_seed(0)
    model = UNet(1, 4, base=base, depth=depth).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 1, size, size).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 4, (batch_size, size, size))
    times = []
    for _ in range(max(rounds, 5) + 1):  # the first step warms up; min of at least 5
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def measure(name, root, size, batch_size, rounds):
    from medsegloss.data import WithDistanceMaps, cache, get_dataset

    cache.clear()
    started = time.perf_counter()
    dataset = get_dataset(name, root, split="train", size=size)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    get_dataset(name, root, split="train", size=size)
    warm = time.perf_counter() - started
    plain = min(epoch_seconds(dataset, batch_size)[0] for _ in range(rounds))
    seconds, count = epoch_seconds(dataset, batch_size)
    wrapped = WithDistanceMaps(dataset)
    first = epoch_seconds(wrapped, batch_size)[0]
    cached = min(epoch_seconds(wrapped, batch_size)[0] for _ in range(rounds))
    return {"dataset": name, "items": count, "cold_s": cold, "warm_s": warm, "items_per_s": count / plain,
            "dist_first_items_per_s": count / first, "dist_cached_items_per_s": count / cached,
            "batch_s": plain / (count / batch_size), "dist_batch_s": cached / (count / batch_size)}


def write_nnunet(folder: Path, cases: int = 16, shape_xyz=(96, 96, 24), regions: bool = False) -> Path:
    """A synthetic nnU-Net v2 raw dataset: ``cases`` cases of two channels (CT, T2) of
    ``shape_xyz`` voxels (0.8 x 0.8 x 3 mm), labels 0-3 (or the BraTS-like regions over them)."""
    import json

    import nibabel

    rng = np.random.default_rng(0)
    root = folder / ("nnunet-regions" if regions else "nnunet")
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for k in range(cases):
        label = rng.integers(0, 4, shape_xyz).astype(np.uint8)
        nibabel.save(nibabel.Nifti1Image(label, affine), str(root / "labelsTr" / f"case_{k:03d}.nii.gz"))
        for c in range(2):
            image = rng.normal(0, 300, shape_xyz).astype(np.int16)
            nibabel.save(nibabel.Nifti1Image(image, affine), str(root / "imagesTr" / f"case_{k:03d}_{c:04d}.nii.gz"))
    labels = ({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3} if regions
              else {"background": 0, "a": 1, "b": 2, "c": 3})
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "T2"}, "labels": labels,
                                                   "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


def measure_standard(size: int | None, batch_size: int, rounds: int) -> None:
    """Items/s of the ``nnunet`` loader (2-D slices and 3-D volumes; integer classes and regions)
    on a synthetic dataset written to a temp folder, plus the cold and warm build times."""
    from medsegloss.data import cache, get_dataset

    print(f"\n## nnunet, 16 cases of 2 channels 96x96x24 -> size {size}, train split\n")
    print("| labels | dims | batch | items | build cold s | build warm s | items/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as temp:
        for regions in (False, True):
            root = write_nnunet(Path(temp), regions=regions)
            for dims, batch in ((2, batch_size), (3, 2)):
                cache.clear()
                started = time.perf_counter()
                dataset = get_dataset("nnunet", root, split="train", size=size, dims=dims)
                cold = time.perf_counter() - started
                started = time.perf_counter()
                get_dataset("nnunet", root, split="train", size=size, dims=dims)
                warm = time.perf_counter() - started
                seconds, count = min(epoch_seconds(dataset, batch) for _ in range(rounds))
                print(f"| {'regions' if regions else 'classes'} | {dims} | {batch} | {count} | {cold:.2f} | "
                      f"{warm:.3f} | {count / seconds:.0f} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="+",
                        default=["phantom-lesion", "phantom-cardiac", "mni152-tissue", "acdc", "covid-ct", "folder"])
    parser.add_argument("--standard", action="store_true",
                        help="measure the nnunet loader on a synthetic dataset (2-D and 3-D) instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.standard:
        for size in args.sizes:
            measure_standard(size, args.batch_size, args.rounds)
        return 0
    with tempfile.TemporaryDirectory() as temp:
        roots = write_files(Path(temp)) if {"acdc", "covid-ct", "folder"} & set(args.datasets) else {}
        for size in args.sizes:
            # the default benchmark's UNet (base 8, depth 3) and the training benchmark's (base 16, depth 4)
            small = unet_step_seconds(size, 8, 3, args.batch_size, args.rounds)
            peer = unet_step_seconds(size, 16, 4, args.batch_size, args.rounds)
            print(f"\n## {size}x{size}, batch {args.batch_size}: UNet step {small * 1e3:.0f} ms (base 8, depth 3), "
                  f"{peer * 1e3:.0f} ms (base 16, depth 4)\n")
            print("| dataset | train items | build cold s | build warm s | items/s | items/s + dist (1st / cached) "
                  "| loader ÷ step (base 8) | + dist cached ÷ step |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for name in args.datasets:
                row = measure(name, roots.get(name), size, args.batch_size, args.rounds)
                print(f"| {name} | {row['items']} | {row['cold_s']:.2f} | {row['warm_s']:.3f} | "
                      f"{row['items_per_s']:.0f} | {row['dist_first_items_per_s']:.0f} / "
                      f"{row['dist_cached_items_per_s']:.0f} | {row['batch_s'] / small:.3f} | "
                      f"{row['dist_batch_s'] / small:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
