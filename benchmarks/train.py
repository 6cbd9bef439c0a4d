"""Seconds per training step: the trainer's `train_one_epoch` vs a bare PyTorch loop, and the
cost of a distance-map loss step (maps from the cached data pipeline) vs a Dice step.

Same UNet, loss, optimizer and batches (one DataLoader over a phantom dataset) side by side in
one process; rounds are interleaved and each variant's minimum over rounds is reported
(the machine is noisy: compare ratios, not absolute times across runs).

    python benchmarks/train.py                      # 128x128, batch 8, UNet base 16, 2 threads
    python benchmarks/train.py --size 64 --rounds 3 # quicker
    python benchmarks/train.py --threads 1 --clock cpu   # on a busy machine: CPU time, 1 thread
"""

from __future__ import annotations

import argparse
import io
import time

import torch


def make_setup(dataset, loss_name: str, base: int, depth: int, seed: int = 0):
    from medsegloss import losses
    from medsegloss.experiment.components import output_channels
    from medsegloss.experiment.config import Config
    from medsegloss.models import UNet

    torch.manual_seed(seed)
    channels = output_channels(Config(), dataset.num_classes)
    model = UNet(1, channels, base=base, depth=depth).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, optimizer, losses.build(loss_name)


def loader_of(dataset, batch_size: int, steps: int):
    from torch.utils.data import DataLoader, Subset

    items = Subset(dataset, range(min(len(dataset), batch_size * steps)))
    return DataLoader(items, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


CLOCK = time.perf_counter  # --clock cpu: time.process_time (immune to waiting for a busy CPU)


def trainer_step_seconds(dataset, loss_name, base, depth, batch_size, steps) -> float:
    from tqdm import tqdm

    from medsegloss.experiment.trainer import train_one_epoch

    model, optimizer, loss_fn = make_setup(dataset, loss_name, base, depth)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = loader_of(dataset, batch_size, steps)
    started = CLOCK()
    with tqdm(total=len(loader.dataset), file=io.StringIO()) as progress:  # the bar's cost included
        stats = train_one_epoch(model, loader, loss_fn, optimizer, scaler, device=torch.device("cpu"), epoch=1,
                                step=0, channels_last=True, progress=progress, loss_name=loss_name)
    return (CLOCK() - started) / stats["steps"]


def bare_step_seconds(dataset, loss_name, base, depth, batch_size, steps) -> float:
    model, optimizer, loss_fn = make_setup(dataset, loss_name, base, depth)
    loader = loader_of(dataset, batch_size, steps)
    model.train()
    started, count = CLOCK(), 0
    for batch in loader:
        image = batch["image"].contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(image), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        count += 1
    return (CLOCK() - started) / count


def interleaved(variants: dict, rounds: int) -> dict[str, float]:
    """Minimum seconds per step of each variant over ``rounds`` interleaved rounds."""
    best = {name: float("inf") for name in variants}
    for index in range(rounds):
        order = list(variants) if index % 2 == 0 else list(reversed(variants))
        for name in order:
            best[name] = min(best[name], variants[name]())
    return best


def main(argv=None) -> None:
    from medsegloss.data import WithDistanceMaps, get_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="phantom-cardiac")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time, steadier on a busy machine (use with --threads 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    dataset = get_dataset(args.dataset, size=args.size, num_cases=12, slices_per_case=10, val_fraction=0.0,
                          test_fraction=0.0)
    shape = dict(base=args.base, depth=args.depth, batch_size=args.batch_size, steps=args.steps)
    print(f"{args.dataset} {args.size}x{args.size}, batch {args.batch_size}, UNet base {args.base} depth "
          f"{args.depth}, {args.threads} threads, {args.clock} clock, min over {args.rounds} interleaved rounds of {args.steps} steps")

    for loss_name in ("ce", "ce + 1.0*dice"):
        times = interleaved({"trainer": lambda: trainer_step_seconds(dataset, loss_name, **shape),
                             "bare loop": lambda: bare_step_seconds(dataset, loss_name, **shape)}, args.rounds)
        print(f"  {loss_name:<14} trainer {times['trainer']:.3f} s/step   bare loop {times['bare loop']:.3f} "
              f"s/step   ratio {times['trainer'] / times['bare loop']:.3f}")

    channels = 1 if dataset.num_classes == 2 else dataset.num_classes
    cached = WithDistanceMaps(dataset, channels).precompute()  # what fit does: maps once per item
    times = interleaved({name: (lambda name=name: trainer_step_seconds(cached, name, **shape))
                         for name in ("dice", "boundary", "gdl_boundary")}, args.rounds)
    for name in ("boundary", "gdl_boundary"):
        print(f"  {name:<14} {times[name]:.3f} s/step vs dice {times['dice']:.3f} s/step   "
              f"ratio {times[name] / times['dice']:.3f}   (dist from the cached pipeline)")


if __name__ == "__main__":
    main()
