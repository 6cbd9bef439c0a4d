"""``medsegloss bench``: the controlled loss benchmark — losses × datasets × seeds through ``fit``.

Controlled means that, per dataset and seed, only the loss changes: every loss's run starts from
the same initial weights (``OUT/<dataset>/init/seed<k>.pt``, made once by ``initial_state`` and
loaded through ``config.init_weights``), and sees the same split, batch order and augmentation
(all drawn from the seed). Runs are ordinary training runs in ``OUT/<dataset>/<loss slug>/seed<k>/``:
finished ones are skipped, interrupted ones resume, and ``--shard i/n`` runs every n-th one so a
SLURM array can spread a sweep over machines (``medsegloss report OUT...`` merges the folders).
``--jobs N`` trains N runs at once in worker processes (same results as one at a time). At the
end the report is written into OUT (``REPORT.md``, ``report.html``, ``results.*``); when runs did
not converge or collapsed, it says so and ``bench`` exits with status 3 (docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The default benchmark, chosen by measurement to end with a ready verdict in under 10 minutes on
# 2 CPU cores (docs/benchmark.md): 4 losses (the reference experiment's ce and dice_ce, tversky
# for the FP/FN trade-off, gdl_boundary for the boundary family) x 2 datasets (the lesion phantom:
# small, imbalanced; the real MNI152 brain) x 5-fold cross-validation x 1 seed = 40 runs. A small
# UNet on 64x64 slices with the paper's Adam lr 0.01, 500 optimizer steps (the same for every
# dataset whatever its size) of 48x48 patches (1/3 centred on foreground), seeded augmentation,
# the poly schedule and the final weights tested. At this budget `dice` and `focal` are still
# rising on the lesion phantom: add them with `--losses ... --steps 1000`.
DEFAULT_LOSSES = ("ce", "dice_ce", "tversky", "gdl_boundary")
DEFAULT_DATASETS = ("phantom-lesion", "mni152-tissue")
DEFAULT_SEEDS = (0,)
DEFAULT_STEPS = 500
DEFAULT_SETTINGS = {"image_size": 64, "base_width": 8, "depth": 3, "steps": DEFAULT_STEPS, "val_every": 25,
                    "schedule": "poly", "patch": 48, "augment": True, "batch_size": 8, "lr": 0.01, "folds": 5,
                    "metrics": ("dice", "iou", "pixel_error", "hd95", "assd")}
# The defaults of both commands (`medsegloss train` takes them without the folds: one run).
TRAIN_DEFAULTS = {key: value for key, value in DEFAULT_SETTINGS.items() if key != "folds"}
# Per-dataset options used when --dataset-options is not given: 25 phantom cases / 25 brain slabs,
# so each fold tests 5 and trains on 12 with 8 validation cases (the convergence rule's curve).
DATASET_OPTIONS = {"phantom-lesion": {"num_cases": 25}, "phantom-cardiac": {"num_cases": 25},
                   "mni152-tissue": {"num_slabs": 25}}
# The seed paper's experiment (Config.preset("paper")): CE against CE + 1 * Dice on real data.
PAPER = {"losses": ("ce", "ce + 1.0*dice"), "datasets": ("covid-ct", "acdc"), "seeds": (0, 1, 2),
         "settings": {"metrics": ("dice", "iou", "pixel_error", "hd95", "assd"), "folds": 5}}
# config fields that decide the initial weights; an OUT holding other ones is refused
MODEL_FIELDS = ("dataset", "seed", "base_width", "depth", "dims", "deep_supervision", "binary_as_one_channel",
                "dataset_options", "data_root", "image_size")


@dataclass(frozen=True)
class Job:
    """One run of the sweep: a loss on a dataset, with a seed and (cross-validation) a fold."""

    dataset: str
    loss: str
    seed: int
    fold: int | None = None
    folds: int | None = None

    def run_dir(self, out: Path) -> Path:
        from medsegloss.experiment.config import loss_slug

        run = out / self.dataset / loss_slug(self.loss) / f"seed{self.seed}"
        return run / f"fold{self.fold}" if self.fold is not None else run


def plan(datasets, losses, seeds, shard: tuple[int, int] = (1, 1), folds: dict | None = None) -> list[Job]:
    """The sweep in a fixed order (dataset, seed, fold, loss), then every ``n``-th job from the
    ``i``-th for ``shard = (i, n)``: shards are disjoint, cover the sweep, and are balanced over
    losses. ``folds``: dataset -> number of cross-validation folds (None or absent: one split).

    >>> [(j.loss, j.seed) for j in plan(["d"], ["ce", "dice"], [0, 1], shard=(2, 2))]
    [('dice', 0), ('dice', 1)]
    >>> [(j.seed, j.fold, j.loss) for j in plan(["d"], ["ce"], [0], folds={"d": 2})]
    [(0, 0, 'ce'), (0, 1, 'ce')]
    """
    index, count = shard
    if not (isinstance(count, int) and count >= 1 and 1 <= index <= count):
        raise ValueError(f"shard must be i/n with 1 <= i <= n, got {index}/{count}")
    folds = folds or {}
    jobs = [Job(dataset, loss, int(seed), fold, folds.get(dataset))
            for dataset in datasets for seed in seeds
            for fold in (range(folds[dataset]) if folds.get(dataset) else [None]) for loss in losses]
    return jobs[index - 1::count]


MIN_UNITS_PER_FOLD = 2  # fewer test units per fold than this: leave-one-out instead


def fold_count(config, say=None) -> int | None:
    """The cross-validation folds of ``config``'s dataset: ``config.folds`` (None: one split) when
    the dataset has at least 2 units per fold; else leave-one-out over its units (said once);
    fewer than 3 units: a ValueError (no fold could train on 2 units and test on another)."""
    from medsegloss.data.splits import PARTS, count_units, read_folds_file
    from medsegloss.experiment.components import make_dataset

    if config.folds_file is not None:  # the file decides (nnU-Net's splits_final.json)
        every = make_dataset(config.replace(folds=None, fold=None), "all").split
        return len(read_folds_file(config.folds_file, [c for part in PARTS for c in every[part]],
                                   units=every.get("units")))
    if config.folds is None:
        return None

    units = count_units(make_dataset(config.replace(folds=None, fold=None), "all").split)
    if units >= MIN_UNITS_PER_FOLD * config.folds:
        return config.folds
    name = config.dataset_name or config.dataset
    if units < 3:
        raise ValueError(f"{name} has {units} independent unit(s) (cases or declared groups): cross-validation needs "
                         f"at least 3 (one to test, one to validate, one to train); add data or use --folds 0 for "
                         f"one train/val/test split")
    if say is not None:
        say(f"bench: {name} has {units} units, too few for {config.folds} folds of {MIN_UNITS_PER_FOLD}: "
            f"leave-one-out cross-validation ({units} folds) instead")
    return units


def write_fold_files(config, out: Path, dataset: str, seeds, folds: int) -> None:
    """``OUT/<dataset>/folds/seed<k>.json``: every fold's train / val / test cases of each seed
    (like nnU-Net's ``splits_final.json``), for the record; the runs draw the same folds."""
    from medsegloss import _io
    from medsegloss.data.splits import folds_of
    from medsegloss.experiment.components import make_dataset

    from medsegloss.data.splits import PARTS, read_folds_file

    every = make_dataset(config.replace(folds=None, fold=None), "all")
    for seed in seeds:
        path = out / dataset / "folds" / f"seed{seed}.json"
        if not path.exists():
            splits = (read_folds_file(config.folds_file, [c for p in PARTS for c in every.split[p]], seed=int(seed),
                                      val_fraction=config.val_fraction, units=every.split.get("units"))
                      if config.folds_file else
                      folds_of(every.split, folds, seed=int(seed), val_fraction=config.val_fraction))
            _io.write_json(path, {"dataset": dataset, "seed": int(seed), "folds": folds,
                                  "units": every.split.get("units", {}), "splits": splits}, indent=1)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; also SLURM's ``$SLURM_ARRAY_TASK_ID`` given as ``"2/4"``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n (e.g. 1/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return index, count


def split_losses(items) -> list[str]:
    """Loss arguments, each a name or loss string; commas outside parentheses separate several in
    one argument (the loss language's lists, :func:`medsegloss.losses.split_list`):
    ``["ce,dice", "tversky(alpha=0.3, beta=0.7)"]`` -> 3 losses."""
    from medsegloss.losses import split_list

    losses = [loss for item in items for loss in split_list(item)]
    duplicates = sorted({loss for loss in losses if losses.count(loss) > 1})
    if duplicates:
        raise ValueError(f"loss(es) given twice: {', '.join(duplicates)}")
    return losses


def parse_data_roots(items, datasets) -> dict[str, str]:
    """``["acdc=/data/ACDC", "covid-ct=/data/covid"]`` -> {dataset: root}; a bare ``DIR`` is the
    root of the only dataset."""
    roots = {}
    for item in items or []:
        name, separator, root = item.partition("=")
        if not separator:
            if len(datasets) != 1:
                raise ValueError(f"--data-root {item!r}: name the dataset (NAME=DIR) when the sweep has "
                                 f"several datasets ({', '.join(datasets)})")
            name, root = datasets[0], item
        if name not in datasets:
            raise ValueError(f"--data-root {item!r}: {name!r} is not a dataset of this sweep ({', '.join(datasets)})")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"--data-root {item!r}: folder {root} does not exist")
        roots[name] = root
    from medsegloss import data

    missing = [d for d in datasets if data.info(d).needs_root and d not in roots]
    if missing:
        raise ValueError(
            f"dataset(s) {', '.join(missing)} need their data: give "
            + " ".join(f"--data-root {d}=DIR" for d in missing)
            + " (docs/benchmark.md says where to get them and how the folders look)")
    return roots


def for_dataset(base, dataset: str, roots: dict[str, str], named=None):
    """``base`` on ``dataset``: its data root, and its default options unless options were given.
    A named dataset (``named``: name -> :class:`~medsegloss.experiment.config.NamedDataset`)
    takes its kind, root and own options, and keeps its name (``dataset_name``)."""
    spec = (named or {}).get(dataset)
    if spec is not None:
        options = {**(base.dataset_options or DATASET_OPTIONS.get(spec.kind, {})), **spec.options}
        return base.replace(dataset=spec.kind, dataset_name=None if spec.name == spec.kind else spec.name,
                            data_root=spec.root or roots.get(dataset), dataset_options=options)
    options = base.dataset_options or DATASET_OPTIONS.get(dataset, {})
    return base.replace(dataset=dataset, data_root=roots.get(dataset), dataset_options=options)


def named_datasets(specs, option_items, datasets) -> tuple[dict, dict]:
    """``--dataset NAME=KIND:ROOT`` values and ``--dataset-options`` -> (options for every
    dataset, name -> NamedDataset), all checked before any training: names folder-safe and
    unique (also against ``--datasets``), kinds registered, roots existing."""
    from medsegloss.experiment.config import check_named_datasets, parse_dataset_options, parse_named_dataset

    named = [parse_named_dataset(text) for text in specs or []]
    check_named_datasets(named)
    clash = sorted({spec.name for spec in named} & set(datasets))
    if clash:
        raise ValueError(f"--dataset: name(s) {', '.join(clash)} also given in --datasets; give each dataset once")
    common, per_name = parse_dataset_options(option_items, [*datasets, *(spec.name for spec in named)])
    named = {spec.name: dataclasses.replace(spec, options=per_name.get(spec.name, {})) for spec in named}
    for dataset in datasets:  # a registry dataset with options of its own: a NamedDataset under its own name
        if dataset in per_name:
            from medsegloss.experiment.config import NamedDataset

            named[dataset] = NamedDataset(dataset, dataset, None, per_name[dataset])
    return common, named


def configs(base, jobs: list[Job], out: Path, roots: dict[str, str], named=None) -> dict[Job, object]:
    """The config of every job (``init_weights`` pointing at its dataset and seed's init file)."""
    return {job: for_dataset(base, job.dataset, roots, named).replace(
                loss=job.loss, seed=job.seed, folds=job.folds, fold=job.fold,
                init_weights=str(init_path(out, job).resolve()), out=str(job.run_dir(out)))
            for job in jobs}


def init_path(out: Path, job: Job) -> Path:
    return out / job.dataset / "init" / f"seed{job.seed}.pt"


def ensure_initial_weights(config, path: Path) -> bool:
    """Write ``initial_state(config)`` to ``path`` unless it is there (made by this or another
    shard: the state is a function of the config, so concurrent shards write the same bytes).
    The model-deciding fields are kept beside it; another OUT's settings are refused. Returns
    whether it was created."""
    from medsegloss import _io
    from medsegloss.experiment.components import initial_state

    fields = {name: config.to_dict()[name] for name in MODEL_FIELDS}
    record = path.with_suffix(".json")
    if path.exists() and record.exists():
        stored = _io.read_json(record)
        if stored != fields:
            differ = ", ".join(f"{k}: {stored.get(k)!r} there, {v!r} now" for k, v in fields.items()
                               if stored.get(k) != v)
            raise ValueError(f"{path} holds the initial weights of other settings ({differ}); "
                             f"use another --out for a benchmark with other model or data settings")
        return False
    _io.save_torch(path, initial_state(config))
    _io.write_json(record, fields)
    return True


def check_sweep(base, datasets, losses, roots: dict[str, str], named=None) -> None:
    """Fail before any training on an unknown dataset or loss, a bad option or a missing data
    root (``components.check_settings`` on every dataset × loss: the loss strings are read, not
    built; each run builds its loss once)."""
    from medsegloss.experiment.components import check_settings

    for dataset in datasets:
        for loss in losses:
            check_settings(for_dataset(base, dataset, roots, named).replace(
                loss=loss, init_weights=None, fold=0 if base.folds else None))
    check_run_folders(losses)


def check_run_folders(losses) -> None:
    """Two loss strings that name one run folder (``"ce+dice"`` and ``"ce + dice"``) are refused
    before any training: the second would find the first's run (case-folded: macOS and Windows)."""
    from medsegloss.experiment.config import loss_slug

    seen = {}
    for loss in losses:
        other = seen.setdefault(loss_slug(loss).casefold(), loss)
        if other != loss:
            raise ValueError(f"losses {other!r} and {loss!r} name one run folder ({loss_slug(loss)}): "
                             f"they are one loss written twice; give it once")


def check_same_settings(out: Path, base, job_configs: dict) -> None:
    """Refuse, before anything is written, a sweep into an ``out`` whose ``bench.json`` or runs
    were made with other settings (field by field, :func:`~medsegloss.experiment.rundir.config_differences`):
    skipping those runs would make the report state settings they were never trained with. A
    run that can train on to the new budget (:func:`~medsegloss.experiment.rundir.continues`) is
    not a difference."""
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.rundir import config_differences, continuable, continues, read_run_json

    differ = {}  # "field: X there, Y here" -> the first file that holds X
    record = out / "bench.json"
    if record.exists():
        stored = read_run_json(record)
        if not isinstance(stored, dict) or not isinstance(stored.get("settings"), dict):
            raise ValueError(f"{record} is corrupt (not a bench record); move it away or choose another --out")
        try:
            longer = continues(Config.from_dict(stored["settings"]), base)
        except (TypeError, ValueError):  # settings of another version
            longer = False
        for line in ([] if longer else config_differences(stored["settings"], base)):
            if line.split(":")[0] not in SWEEP_FIELDS:
                differ.setdefault(line, record)
    for config in job_configs.values():
        path = Path(config.out) / "config.json"
        if path.exists() and not continuable(path.parent, config):
            stored = read_run_json(path)
            if not isinstance(stored, dict):
                raise ValueError(f"{path} is corrupt (not a JSON object); move it away or choose another --out")
            for line in config_differences(stored, config):
                differ.setdefault(line, path)
    if differ:
        raise ValueError(f"{out} holds runs of other settings ({'; '.join(differ)}; first in {next(iter(differ.values()))}): "
                         f"bench would skip them and report settings they were not trained with; rerun with their "
                         f"settings, or use another --out for these")


def finished(config, run_dir: Path) -> bool:
    """Whether the run needs no training: its ``metrics.json`` exists and it cannot be continued
    to a larger budget (``rundir.continuable``: a constant-rate run of fewer steps)."""
    from medsegloss.experiment.rundir import continuable

    return (run_dir / "metrics.json").exists() and not continuable(run_dir, config)


def default_jobs(threads: int = 0) -> int:
    """Runs at once: the usable cores over the threads of one run (1 when 0 = torch's default)."""
    from medsegloss.experiment.trainer import usable_cores

    return max(1, usable_cores() // max(1, threads))


def _start_worker(threads: int) -> None:
    """A worker process: ``threads`` torch threads per run (the cores are shared by the jobs)."""
    import torch

    torch.set_num_threads(threads)


def _train(config_dict: dict, run_dir: str) -> dict:
    """One run (in a worker process): the test mean Dice and status, or the error as text (a
    broken loss must not stop the sweep)."""
    from medsegloss.experiment.config import Config

    return _train_here(Config.from_dict(config_dict), Path(run_dir))


def estimate_seconds(config, runs: int, jobs: int, timed_steps: int = 6) -> dict:
    """Expected duration of ``runs`` runs like ``config`` on ``jobs`` workers, from timing a few
    steps and one validation of a throw-away copy of the run (in a temporary folder):
    ``runs / jobs * (setup + steps * seconds per step + (validations + 2) * seconds per validation)``,
    the setup (data build, model, loader start, the first two steps) timed as well."""
    import tempfile

    import torch

    from medsegloss.experiment import components, trainer
    from medsegloss.experiment.evaluation import evaluate_model

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        try:
            if jobs > 1:
                torch.set_num_threads(max(1, config.threads))  # as in a worker
            started = time.perf_counter()  # the run's setup: data build, model, loader (workers) start
            loss_fn = components.check_config(config)
            run = trainer.prepare_run(config, Path(folder), loss_fn, components.resolve_device(config), quiet=True)
            batches = iter(trainer.make_loader(run))
            trainer.train_interval(run, batches, min(2, run.total_steps))  # warm-up: first-step allocations
            setup_seconds = time.perf_counter() - started
            started = time.perf_counter()
            stop = min(run.state.step + timed_steps, run.total_steps)
            made = stop - run.state.step
            if made > 0:
                trainer.train_interval(run, batches, stop)
            step_seconds = (time.perf_counter() - started) / max(made, 1)
            started = time.perf_counter()
            evaluate_model(run.model, run.parts["val"], metrics=config.metrics, batch_size=config.batch_size,
                           patch_size=config.patch)
            validation_seconds = time.perf_counter() - started
        finally:
            torch.set_num_threads(threads)
    warm_up = min(2, run.total_steps)  # counted in setup_seconds
    per_run = (setup_seconds + (run.total_steps - warm_up) * step_seconds
               + (run.total_steps // run.val_every + 2) * validation_seconds)
    waves = -(-runs // max(1, jobs))
    return {"seconds": waves * per_run, "step_seconds": step_seconds, "validation_seconds": validation_seconds,
            "setup_seconds": setup_seconds, "steps": run.total_steps}


def run_sweep(base, datasets, losses, seeds, out, *, shard: tuple[int, int] = (1, 1), roots=None,
              quiet: bool = False, jobs: int = 1, estimate: bool | None = None, named=None,
              command: list[str] | None = None) -> dict:
    """Train every job of this shard that is not finished; returns ``{"trained", "skipped",
    "failed": [(job, error)], "jobs"}``. A failing run (e.g. a loss that diverges) is reported
    and the sweep goes on; ``medsegloss bench`` then exits with status 1.

    ``jobs > 1`` trains that many runs at once in worker processes (``spawn``: torch is not
    fork-safe), each with ``base.threads`` torch threads (1 when 0); every run is deterministic
    and the initial weights are written before the workers start, so the results equal a
    sequential sweep's. ``estimate`` (default: when not ``quiet``) prints the expected duration
    from a short timing first.
    """
    from tqdm import tqdm

    from medsegloss import _io

    out, roots = Path(out), dict(roots or {})
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    check_sweep(base, datasets, losses, roots, named)
    say = (lambda message: None) if quiet else tqdm.write
    folds = {dataset: fold_count(for_dataset(base, dataset, roots, named), say) for dataset in datasets}
    planned = plan(datasets, losses, seeds, shard, folds)
    job_configs = configs(base, planned, out, roots, named)
    check_same_settings(out, base, job_configs)
    for dataset, count in folds.items():
        if count:
            write_fold_files(for_dataset(base, dataset, roots, named), out, dataset, seeds, count)
    _io.write_json(out / "bench.json", {"datasets": list(datasets), "losses": list(losses),
                                        "seeds": [int(s) for s in seeds], "folds": folds, "settings": base.to_dict(),
                                        "command": command})  # the bench arguments, for the report
    todo = [job for job in planned if not finished(job_configs[job], job.run_dir(out))]
    jobs = min(jobs, max(1, len(todo)))
    if jobs > 1:
        from medsegloss.experiment.workers import unguarded_main_script

        script = unguarded_main_script()
        if script is not None:  # its spawned workers would start the sweep again and die
            say(f"bench: note: {script} has no `if __name__ == \"__main__\":` guard, so worker processes "
                f"cannot start; training the runs one at a time here (add the guard for --jobs {jobs})")
            jobs = 1
    say(f"bench: {len(planned)} runs" + (f" in shard {shard[0]}/{shard[1]}" if shard[1] > 1 else "")
        + f" ({len(planned) - len(todo)} finished already, {len(todo)} to train"
        + (f", {jobs} at once" if jobs > 1 else "") + f") into {out}")
    for job in todo:  # before any worker starts: every loss of a seed loads the same file
        ensure_initial_weights(job_configs[job].replace(init_weights=None), init_path(out, job))
    if todo and (estimate if estimate is not None else not quiet):
        expected = estimate_seconds(job_configs[todo[0]], len(todo), jobs)
        cap = "at most " if base.until_converged else ""  # early stopping ends runs before their cap
        say(f"bench: expected {cap}about {expected['seconds'] / 60:.1f} min ({expected['steps']} steps per run"
            + (" (the --until-converged cap)" if base.until_converged else "") + " at "
            f"{1000 * expected['step_seconds']:.0f} ms/step, {expected['validation_seconds']:.2f} s per "
            f"validation, {expected['setup_seconds']:.1f} s setup, timed on {todo[0].dataset}; a busy machine takes "
            f"longer)")
    failed = []
    width = max((len(job.loss) for job in todo), default=0)

    def report(number: int, job: Job, outcome: dict) -> None:
        if "error" in outcome:
            failed.append((job, outcome["error"]))
            text = f"FAILED ({outcome['error']})"
        else:
            text = f"test Dice {outcome['dice']:.3f}" + (f"  {outcome['status']}" if outcome.get("status") else "")
        fold = f" fold {job.fold}" if job.fold is not None else ""
        say(f"[{number:>{len(str(len(todo)))}}/{len(todo)}] {job.dataset:<16} {job.loss:<{width}} seed {job.seed}{fold}"
            f"  {text}  {outcome['seconds']:.1f} s")
        if number == 1 and len(todo) > 1:  # the estimate again, from a whole measured run
            waves = -(-len(todo) // jobs)
            say(f"bench: the first run took {outcome['seconds']:.1f} s: expected about "
                f"{waves * outcome['seconds'] / 60:.1f} min for all {len(todo)} runs (measured)")

    with tqdm(total=len(todo), unit="run", desc="bench", disable=quiet, dynamic_ncols=True) as bar:
        if jobs == 1:
            for number, job in enumerate(todo, start=1):
                outcome = _train_here(job_configs[job], job.run_dir(out))
                bar.update(1)
                report(number, job, outcome)
        else:
            _train_in_workers(todo, job_configs, out, jobs, max(1, base.threads), bar, report)
    return {"jobs": len(planned), "trained": len(todo) - len(failed), "skipped": len(planned) - len(todo),
            "failed": failed}


def _train_here(config, run_dir: Path) -> dict:
    """One run in this process (``fit`` looked up at call time, so tests can patch the trainer)."""
    from medsegloss.experiment.evaluation import mean_dice
    from medsegloss.experiment.trainer import fit

    started = time.perf_counter()
    try:
        result = fit(config, run_dir, quiet=True)
    except Exception as error:  # noqa: BLE001 -- one broken loss must not stop the sweep
        return {"error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - started}
    return {"dice": mean_dice(result.get("test_rows", [])), "seconds": time.perf_counter() - started,
            "status": result.get("diagnostics", {}).get("status", "")}


def _train_in_workers(todo, job_configs, out: Path, jobs: int, threads: int, bar, report) -> None:
    """Train ``todo`` on ``jobs`` spawned worker processes (``workers.imap_unordered``); a
    progress line per finished run. A worker that dies (e.g. out of memory) loses only its own
    run, which a fresh worker trains again (resuming from its last checkpoint); workers exit
    when this process dies. Ctrl-C terminates the workers (their runs resume next time)."""
    from medsegloss.experiment.workers import TaskFailed, imap_unordered

    def lost(index: int, reason: str) -> None:
        bar.write(f"bench: {todo[index].run_dir(out)}: {reason}; training it again", file=sys.stderr)

    tasks = [(job_configs[job].to_dict(), str(job.run_dir(out))) for job in todo]
    results = imap_unordered(_train, tasks, jobs, initializer=_start_worker, initargs=(threads,), on_lost=lost)
    for number, (index, outcome) in enumerate(results, start=1):
        if isinstance(outcome, TaskFailed):
            outcome = {"error": f"worker failed: {outcome}", "seconds": 0.0}
        bar.update(1)
        report(number, todo[index], outcome)


def _sweep_finished(out: Path, datasets, losses, seeds) -> bool:
    from medsegloss import _io

    folds = _io.read_json(out / "bench.json").get("folds") if (out / "bench.json").exists() else None
    return all((job.run_dir(out) / "metrics.json").exists() for job in plan(datasets, losses, seeds, folds=folds))


# ---------------------------------------------------------------- command line
SWEEP_FIELDS = ("dataset", "loss", "seed", "fold", "out", "init_weights", "data_root", "dataset_name",
                "dataset_options")  # set per run by the sweep


def build_parser() -> argparse.ArgumentParser:
    """``medsegloss bench`` options: the sweep's own, then one flag per remaining config field
    (the same flags as ``medsegloss train``)."""
    from medsegloss.experiment.config import add_config_arguments, parse_seed

    parser = argparse.ArgumentParser(
        prog="medsegloss bench", description=__doc__.split("\n\n")[1].strip().replace("``", ""),
        epilog="examples:\n  medsegloss bench                       # the default benchmark (40 runs, under 10 min on 2 CPU cores)\n"
               "  medsegloss bench --losses ce dice \"ce + 0.5*dice\" --seeds 0 1 --steps 1000\n"
               "  medsegloss bench --datasets folder --data-root folder=/data/mine --steps 2000 --jobs 4\n"
               "  medsegloss bench --preset paper --data-root covid-ct=/data/covid --data-root acdc=/data/ACDC\n"
               "  medsegloss bench --dataset liver=nnunet:/data/Dataset003_Liver --dataset cells=folder:/data/cells\n"
               "  medsegloss bench --shard $SLURM_ARRAY_TASK_ID/8 --out /scratch/bench   # one of 8 machines",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="SWEEP.toml",
                        help="the sweep's options from a TOML file (docs/benchmark.md); the command line overrides "
                             "them; the resolved sweep is written to OUT/sweep.toml")
    parser.add_argument("--preset", choices=("default", "paper"), default="default",
                        help="default: the CPU benchmark on the phantoms; paper: the seed paper's experiment "
                             "(UNet base 64, 256x256, Adam lr 0.01, 100 epochs, ce vs ce + 1.0*dice on covid-ct and acdc)")
    parser.add_argument("--losses", nargs="+", metavar="LOSS",
                        help=f"registry names or build() strings (default: {' '.join(DEFAULT_LOSSES)})")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help=f"default: {' '.join(DEFAULT_DATASETS)}")
    parser.add_argument("--seeds", nargs="+", type=parse_seed, metavar="K", help="seed values (default: 0 1 2)")
    parser.add_argument("--data-root", action="append", metavar="NAME=DIR", help="a dataset's folder (repeatable)")
    parser.add_argument("--dataset", action="append", metavar="NAME=KIND:ROOT",
                        help="your own dataset under its own name (repeatable), e.g. liver=nnunet:/data/Dataset003_Liver "
                             "or cells=folder:/data/cells; NAME names its run folders OUT/NAME/... and report columns")
    parser.add_argument("--dataset-options", action="append", metavar="[NAME=]JSON",
                        help="dataset options (repeatable): a JSON object for every dataset, NAME='{json}' or "
                             "NAME=FILE.json for one, or a JSON file {NAME: {...}}")
    parser.add_argument("--out", default="runs/bench", help="benchmark folder (default: runs/bench)")
    parser.add_argument("--shard", type=parse_shard, default=(1, 1), metavar="i/n",
                        help="run every n-th run from the i-th (1-based), e.g. a SLURM array task")
    parser.add_argument("--baseline", help="the loss the report tests the others against, one of --losses "
                                           "(default: ce when the sweep has it, else the first loss)")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="runs trained at once in worker processes (default: the cores / --threads, "
                             "1 thread per run when N > 1); results equal a sequential sweep's")
    from medsegloss.experiment.report import parse_margin

    parser.add_argument("--margin", action="append", type=parse_margin, metavar="METRIC=VALUE",
                        help="practical-equivalence margin of a metric for the verdicts (repeatable), e.g. dice=0.02; "
                             "default: the metric registry's (`medsegloss metrics`)")
    parser.add_argument("--no-report", action="store_true", help="train only; write no report")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    group = parser.add_argument_group("experiment settings (config fields; default: the preset's)")
    add_config_arguments(group, exclude=SWEEP_FIELDS, show_defaults=False)
    return parser


def derived_settings(given: dict) -> dict:
    """The flags ``given``, with the validation interval derived from the budget when the budget
    is given without ``--val-every``: ``--epochs`` alone validates once per epoch, ``--steps N``
    every ``N // 20`` steps (the defaults' ``val_every`` belongs to their 500 steps); and the
    default patch left out (whole images) when ``--image-size`` is smaller than it."""
    if "patch" not in given and given.get("image_size", DEFAULT_SETTINGS["image_size"]) < DEFAULT_SETTINGS["patch"]:
        given = {"patch": None, **given}
    if "val_every" in given:
        return given
    if "epochs" in given and "steps" not in given:  # --epochs: a budget in epochs instead of steps
        return {"steps": None, "val_every": None, **given}
    if "steps" in given:
        return {"val_every": None, **given}
    return given


def sweep_from_args(args) -> tuple:
    """(base config, datasets, losses, seeds, data roots) from parsed arguments."""
    from medsegloss.experiment.config import Config

    own = {"preset", "losses", "datasets", "seeds", "data_root", "out", "shard", "baseline", "no_report", "quiet",
           "jobs", "dataset", "dataset_options", "margin", "config"}
    given = {key: value for key, value in vars(args).items() if key not in own}
    given = derived_settings(given)
    if args.preset == "paper":
        base = Config.preset("paper", **{**PAPER["settings"], **given})
        datasets, losses, seeds = PAPER["datasets"], PAPER["losses"], PAPER["seeds"]
    else:
        base = Config.preset("default", **{**DEFAULT_SETTINGS, **given})
        datasets, losses, seeds = DEFAULT_DATASETS, DEFAULT_LOSSES, DEFAULT_SEEDS
    specs = getattr(args, "dataset", None)
    datasets = list(dict.fromkeys(args.datasets or ([] if specs else datasets)))
    common, named = named_datasets(specs, getattr(args, "dataset_options", None), datasets)
    base = base.replace(dataset_options=common)
    losses = split_losses(args.losses or losses)
    seeds = list(dict.fromkeys(args.seeds if args.seeds is not None else seeds))
    roots = parse_data_roots(args.data_root, datasets) if datasets else {}
    datasets += [name for name in named if name not in datasets]
    check_baseline(args.baseline, losses)
    args.named_datasets = named  # main passes them on to run_sweep
    return base, datasets, losses, seeds, roots


def check_baseline(baseline: str | None, losses) -> None:
    """``--baseline`` must be one of the sweep's losses (checked before any training)."""
    if baseline is not None and baseline not in losses:
        raise ValueError(f"--baseline {baseline!r} is not one of the sweep's losses ({', '.join(map(repr, losses))})")


def main(argv=None) -> int:
    from medsegloss.experiment import sweepfile

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    try:
        if args.config is not None:  # the file's options first: the command line's come after them and win
            given = list(sys.argv[1:] if argv is None else argv)
            args = parser.parse_args(sweepfile.file_arguments(args.config, parser, given) + given)
        base, datasets, losses, seeds, roots = sweep_from_args(args)
        out = Path(args.out)
        jobs = args.jobs if args.jobs is not None else default_jobs(base.threads)
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        outcome = run_sweep(base, datasets, losses, seeds, out, shard=args.shard, roots=roots, quiet=args.quiet,
                            jobs=jobs, named=getattr(args, "named_datasets", None),
                            command=list(sys.argv[1:] if argv is None else argv))
        sweepfile.write_resolved(out, args, base, datasets, losses, seeds, roots)  # OUT/sweep.toml
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume (finished runs are kept)", file=sys.stderr)
        return 130
    except (ValueError, OSError, TypeError) as error:  # OSError: a file not found, or not written
        print(f"medsegloss bench: error: {error}", file=sys.stderr)
        return 2
    for job, error in outcome["failed"]:
        print(f"failed: {job.run_dir(out)}: {error}", file=sys.stderr)
    not_ready = None
    if args.no_report:
        pass
    elif args.shard[1] > 1 and not _sweep_finished(out, datasets, losses, seeds):
        print(f"shard {args.shard[0]}/{args.shard[1]} done; when every shard is, merge them: "
              f"medsegloss report OUT1 OUT2 ... --dest DIR")
    else:
        from medsegloss.experiment.report import main_table, readiness_line, write_report

        try:
            path = write_report([out], out, baseline=args.baseline, margins=dict(args.margin or []))
        except (ValueError, OSError) as error:  # e.g. every run failed, a full disk
            print(f"medsegloss bench: no report: {error}", file=sys.stderr)
            return 1
        print("\n" + main_table(out))
        print(f"\nreport: {path}  (and {out / 'report.html'})")
        not_ready = readiness_line(out)
    print(f"bench: {outcome['trained']} trained, {outcome['skipped']} skipped, {len(outcome['failed'])} failed "
          f"in {time.perf_counter() - started:.0f} s")
    if outcome["failed"]:
        return 1
    if not_ready:
        print(not_ready)
        return NOT_READY
    return 0


NOT_READY = 3  # exit status of `medsegloss bench` when the report's verdict is not ready
