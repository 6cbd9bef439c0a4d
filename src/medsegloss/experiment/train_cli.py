"""The ``medsegloss train`` command: one flag per config field (defaults from ``--preset``),
``--resume RUN_DIR`` to continue an unfinished run, ``--quiet``; errors are one line and exit
status 2 (1: the loss became non-finite; 130: interrupted, with the command that resumes)."""

from __future__ import annotations

import sys
from pathlib import Path

from medsegloss.experiment.bench import TRAIN_DEFAULTS, derived_settings
from medsegloss.experiment.config import PRESETS, Config, add_config_arguments
from medsegloss.experiment.evaluation import mean_dice
from medsegloss.experiment.rundir import finished_result, read_run_json
from medsegloss.experiment.trainer import NonFiniteLossError, fit


def build_parser():
    """``medsegloss train`` options: one flag per config field, plus --preset, --resume, --quiet."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="medsegloss train", description="Train a UNet with one loss; writes a resumable run directory.",
        epilog='example: medsegloss train --dataset phantom-lesion --loss "ce + 1.0*dice" --epochs 2 --out runs/demo')
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: the benchmark's settings (as medsegloss bench); paper: UNet base 64, 256x256, Adam lr 0.01, 100 epochs)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the unfinished run in RUN_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    add_config_arguments(parser.add_argument_group("experiment (config fields; defaults: the benchmark's, "
                                                   "as in medsegloss bench, or --preset paper)"),
                         defaults=TRAIN_DEFAULTS)
    return parser


def parse_arguments(argv) -> tuple:
    """(namespace, the config fields given) of ``medsegloss train``'s arguments; an unknown flag
    fails naming the closest ones."""
    from medsegloss._checks import did_you_mean

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [option for action in parser._actions for option in action.option_strings]
        parser.error(f"unknown option(s) {' '.join(unknown)}.{did_you_mean(unknown[0].split('=')[0], flags)}")
    given = {key: value for key, value in vars(args).items() if key not in ("preset", "resume", "quiet")}
    if args.resume and given:
        parser.error(f"--resume continues the stored config of {args.resume}; do not pass "
                     f"{', '.join('--' + key.replace('_', '-') for key in given)}")
    try:
        given = resolve_named_dataset(given)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return args, given


def resolve_named_dataset(given: dict) -> dict:
    """``--dataset`` means what it means in ``bench``: a kind (``phantom-lesion``) or
    ``NAME=KIND:ROOT``, which sets the dataset kind, its own name (``dataset_name``, unless it is
    the kind) and ``data_root`` (a ``--data-root`` given as well must agree)."""
    from medsegloss.experiment.config import parse_named_dataset

    text = given.get("dataset")
    if not isinstance(text, str) or "=" not in text:
        return given
    spec = parse_named_dataset(text)
    if spec.root is not None and given.get("data_root") not in (None, spec.root):
        raise ValueError(f"--dataset {text!r} names folder {spec.root} but --data-root is {given['data_root']}")
    resolved = {**given, "dataset": spec.kind, "dataset_name": None if spec.name == spec.kind else spec.name}
    if spec.root is not None:
        resolved["data_root"] = spec.root
    return resolved


def settings(preset: str, given: dict) -> dict:
    """The config changes of a ``train`` run: ``bench``'s defaults (``TRAIN_DEFAULTS``; the paper
    preset has its own), the flags given on top, the validation interval derived from a budget
    given without ``--val-every`` (as in ``bench``)."""
    return {**(TRAIN_DEFAULTS if preset == "default" else {}), **derived_settings(given)}


def main(argv=None) -> int:
    """``medsegloss train [--preset paper] [--<field> value ...] [--resume RUN_DIR] [--quiet]``."""
    args, given = parse_arguments(sys.argv[1:] if argv is None else argv)
    out = args.resume
    try:
        if args.resume:
            config_path = Path(args.resume) / "config.json"
            if not config_path.is_file():
                raise FileNotFoundError(f"cannot resume {args.resume}: {config_path} does not exist")
            stored = read_run_json(config_path)
            if not isinstance(stored, dict):
                raise ValueError(f"{config_path} is corrupt (not a JSON object); cannot resume {args.resume}")
            config = Config.from_dict(stored)
        else:
            config = Config.preset(args.preset, **settings(args.preset, given))
            out = config.run_dir
        if finished_result(Path(out), config) is not None and not args.quiet:
            print(f"{out} is finished (metrics.json of this config exists); nothing to do")
        result = fit(config, out, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: medsegloss train --resume {out}", file=sys.stderr)
        return 130
    except NonFiniteLossError as error:
        print(f"medsegloss train: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:  # OSError: a file not found, or not written (_io.WriteError)
        print(f"medsegloss train: error: {error}", file=sys.stderr)
        return 2
    if result and not args.quiet:
        rows = result.get("test_rows", [])
        print(f"run directory: {out}  (test: mean Dice {mean_dice(rows):.4f} over "
              f"{len({row['case'] for row in rows})} cases)")
    return 0
