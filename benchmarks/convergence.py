"""The convergence rule's false-alarm rate on plateaued curves and its power on rising ones, by
simulation with the validation noise measured on real runs (docs/benchmark.md's table).

The noise of a run is the residual SD of a least-squares line through its last quarter of
validations; the simulated curves have 20 validations (5 in the last quarter), noise twice as
large before the last quarter as in it (the learning rate decays), Student t3 tails. A run's
rule (``verdict.not_converged``) and a cell's (the same rule on the mean curve of R runs)
are compared with the former max-vs-max rule (max of the last quarter > max before + 0.01).

    python benchmarks/convergence.py runs/bench          # noise measured on a finished sweep
    python benchmarks/convergence.py --sigma 0.01 0.03   # given noise levels
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from medsegloss.experiment.verdict import not_converged, trend

STEPS = np.arange(25, 501, 25)  # the default sweep's validations
TOTAL = 500
TOLERANCE = 0.01


def measured_noise(out: Path) -> dict[str, float]:
    """Median over each dataset's runs of the residual SD of the last quarter's validations."""
    noise: dict[str, list[float]] = {}
    for log in sorted(Path(out).rglob("metrics.jsonl")):
        config = json.loads((log.parent / "config.json").read_text())
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        late = [(line["step"], line["val_dice"]) for line in lines
                if line.get("val_dice") is not None and line["step"] > 0.75 * (config.get("steps") or TOTAL)]
        if len(late) >= 4:
            steps, scores = np.array(late, dtype=float).T
            fit = np.polyval(np.polyfit(steps, scores, 1), steps)
            noise.setdefault(config.get("dataset_name") or config["dataset"], []).append(
                float(np.sqrt(((scores - fit) ** 2).sum() / (len(late) - 2))))
    return {dataset: float(np.median(values)) for dataset, values in noise.items()}


def curves(rng, trials: int, sigma: float, rise: float = 0.0, runs: int = 1, early: float = 2.0) -> np.ndarray:
    """``trials`` mean curves of ``runs`` runs: flat at 0.8, plus ``rise`` gained linearly over the
    last quarter, with t3 noise of SD ``sigma`` late and ``early * sigma`` before."""
    late = STEPS > 0.75 * TOTAL
    scale = np.where(late, sigma, early * sigma)
    noise = rng.standard_t(3, (trials, runs, len(STEPS))) / math.sqrt(3) * scale
    signal = 0.8 + rise * np.clip((STEPS - 0.75 * TOTAL) / (0.25 * TOTAL), 0, 1)
    return signal + noise.mean(1)


def rates(sigma: float, trials: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    late = STEPS > 0.75 * TOTAL
    result = {}
    for name, rise, runs, early in (("plateau, run", 0.0, 1, 2.0), ("plateau, run, constant noise", 0.0, 1, 1.0),
                                    ("plateau, cell of 5", 0.0, 5, 2.0), ("rise 0.05, run", 0.05, 1, 2.0),
                                    ("rise 0.03, cell of 5", 0.03, 5, 2.0)):
        sample = curves(rng, trials, sigma, rise, runs, early)
        trend_rate = np.mean([bool(not_converged(list(zip(STEPS.tolist(), row)), TOTAL, TOLERANCE)) for row in sample])
        old_rate = np.mean(sample[:, late].max(1) > sample[:, ~late].max(1) + TOLERANCE)
        result[name] = (float(trend_rate), float(old_rate))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="a finished bench folder to measure the noise on")
    parser.add_argument("--sigma", type=float, nargs="*", default=[], help="noise levels (SD of a late validation)")
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args(argv)
    levels = {f"σ = {s:g}": s for s in args.sigma}
    if args.out:
        levels.update({f"{dataset} (σ = {s:.4f})": s for dataset, s in measured_noise(Path(args.out)).items()})
    if not levels:
        parser.error("give a bench folder or --sigma")
    assert trend  # the rule documented in diagnostics
    print(f"share of {args.trials} simulated curves flagged 'not converged': trend rule / former max rule\n")
    header = ["plateau, run", "plateau, run, constant noise", "plateau, cell of 5", "rise 0.05, run",
              "rise 0.03, cell of 5"]
    print("| noise | " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(header))
    for label, sigma in levels.items():
        found = rates(sigma, args.trials)
        print(f"| {label} | " + " | ".join(f"{found[h][0]:.3f} / {found[h][1]:.3f}" for h in header) + " |")


if __name__ == "__main__":
    main()
