"""Sweeps described in a file: ``medsegloss bench --config sweep.toml``.

A sweep file holds ``medsegloss bench``'s options as TOML keys (the flag without ``--``, ``_``
for ``-``): the sweep's own (``losses``, ``datasets``, ``seeds``, ``out``, ``baseline``,
``margins``, ...) and every experiment setting (``steps = 500``, ``metrics = ["dice", "hd95"]``,
``steps = "none"`` for an unset one). Losses are strings or tables of a name and its options;
datasets a list of names or a table per dataset with its ``kind``, ``root`` and options::

    losses = ["ce", "dice_ce", {name = "tversky", alpha = 0.3, beta = 0.7}]
    seeds = [0, 1]
    steps = 1000

    [datasets.phantom-lesion]
    num_cases = 25

    [datasets.liver]
    kind = "nnunet"
    root = "/data/Dataset003_Liver"

The file is read into command-line arguments placed before the command line's, so the command
line overrides it (a repeatable flag, ``--margin`` or ``--dataset-options``, adds to it; giving
``--datasets`` or ``--dataset`` replaces the file's datasets): one parser, one set of defaults and
checks. Unknown keys and wrong types fail before any work, naming the key and its line. After
the sweep, the resolved sweep (every setting explicit) is written to ``OUT/sweep.toml``, so
``medsegloss bench --config OUT/sweep.toml`` plans the same runs again. The same conversion
serves the Python API (:func:`medsegloss.bench.run`).
"""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path

FILE_NAME = "sweep.toml"  # OUT/sweep.toml: the resolved sweep
PRESETS = ("default", "paper")
# the sweep's own keys (not config fields): key -> what it holds, as an error message says it
SWEEP_KEYS = {
    "preset": "a string (default or paper)", "out": "a string (a folder)",
    "losses": "a list of loss strings or {name = ..., options} tables",
    "datasets": "a list of dataset names or a table of datasets", "dataset_options": "a table",
    "seeds": "a list of integers", "shard": 'a string "i/n"', "baseline": "a string (a loss)",
    "jobs": "an integer >= 1", "margins": "a table of metric = number", "no_report": "true or false",
    "quiet": "true or false",
}
DATASET_KEYS = ("kind", "root")  # a dataset table's own keys; the others are the dataset's options


def _type_name(value) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
                       (dict, "table"), ((list, tuple), "array")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


class Source:
    """Where values came from: a file (its text, for line numbers) or a Python call."""

    def __init__(self, name: str, text: str | None = None):
        self.name, self.text = name, text

    def error(self, path: tuple, message: str) -> ValueError:
        from medsegloss._toml import key_line

        line = key_line(self.text, path) if self.text is not None else None
        where = f"{self.name} line {line}" if line else self.name
        return ValueError(f"{where}: {'.'.join(str(p) for p in path if not isinstance(p, int))}: {message}")


def config_types() -> dict[str, object]:
    from medsegloss.experiment.bench import SWEEP_FIELDS
    from medsegloss.experiment.config import Config

    return {name: kind for name, kind in typing.get_type_hints(Config).items() if name not in SWEEP_FIELDS}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SIMPLE = {bool: (lambda v: isinstance(v, bool), "true or false"), int: (_is_int, "an integer"),
           float: (lambda v: _is_int(v) or isinstance(v, float), "a number"),
           str: (lambda v: isinstance(v, str), "a string"), dict: (lambda v: isinstance(v, dict), "a table")}


def expectation(annotation) -> tuple:
    """(check, description) of a config field's type in a sweep file; an unset optional value is
    the string ``"none"`` (TOML has no null), as on the command line."""
    if typing.get_origin(annotation) is tuple:  # a string is one item (or "a,b", as on the command line)
        return (lambda v: isinstance(v, str) or isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
                "a list of strings")
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if arguments:  # Optional[X]
        check, text = _SIMPLE[arguments[0]]
        return (lambda v: v == "none" or v is None or check(v)), f'{text} or "none"'
    return _SIMPLE[annotation]


def check(values: dict, source: Source, allowed=None) -> dict:
    """``values`` when every key is a sweep option (``allowed``: those of the caller) or a config
    field and every value has its type; else a ValueError naming the key (and its line)."""
    types = config_types()
    known = [*SWEEP_KEYS, *types] if allowed is None else list(allowed)
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise source.error((key,), f"unknown key{hint}; the keys are the options of medsegloss bench "
                                       "(--help) without '--', with _ for -")
        if key in SWEEP_KEYS:
            _check_sweep_key(key, value, source)
        else:
            test, text = expectation(types[key])
            if not test(value):
                raise source.error((key,), f"must be {text}, got {_type_name(value)} {value!r}")
    return values


def _check_sweep_key(key: str, value, source: Source) -> None:
    wrong = source.error((key,), f"must be {SWEEP_KEYS[key]}, got {_type_name(value)} {value!r}")
    if key in ("no_report", "quiet"):
        if not isinstance(value, bool):
            raise wrong
    elif key == "jobs":
        if not _is_int(value) or value < 1:
            raise wrong
    elif key == "seeds":
        if isinstance(value, (str, dict)) or not hasattr(value, "__iter__") or not all(_is_int(s) for s in value):
            raise wrong
    elif key == "losses":
        _check_losses(value, source, wrong)
    elif key == "datasets":
        _check_datasets(value, source, wrong)
    elif key == "margins":
        if not isinstance(value, dict):
            raise wrong
        for metric, margin in value.items():
            if not (_is_int(margin) or isinstance(margin, float)):
                raise source.error((key, metric), f"must be a number, got {_type_name(margin)} {margin!r}")
    elif key == "dataset_options":
        if not isinstance(value, dict):
            raise wrong
    elif not isinstance(value, str) or (key == "preset" and value not in PRESETS):
        raise wrong
    elif key == "shard":
        import argparse

        from medsegloss.experiment.bench import parse_shard

        try:
            parse_shard(value)
        except argparse.ArgumentTypeError as error:
            raise source.error((key,), str(error).replace("--shard ", "")) from None


def _check_losses(value, source: Source, wrong: ValueError) -> None:
    if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)) or not value:
        raise wrong
    for index, loss in enumerate(value):
        if isinstance(loss, dict):
            if not isinstance(loss.get("name"), str):
                raise source.error(("losses", index), f"loss {index + 1} is a table without name = \"<loss>\": {loss!r}")
        elif not isinstance(loss, str):
            raise source.error(("losses", index), f"loss {index + 1} must be a string or a table, got "
                                                  f"{_type_name(loss)} {loss!r}")


def _check_datasets(value, source: Source, wrong: ValueError) -> None:
    if isinstance(value, dict):
        for name, entry in value.items():
            if not isinstance(entry, dict):
                raise source.error(("datasets", name), f"must be a table (kind, root and options), got "
                                                       f"{_type_name(entry)} {entry!r}")
            for key in DATASET_KEYS:
                if key in entry and not isinstance(entry[key], str):
                    raise source.error(("datasets", name, key), f"must be a string, got {_type_name(entry[key])} "
                                                                f"{entry[key]!r}")
    elif isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(d, str) for d in value):
        raise wrong


def read(path) -> dict:
    """The checked values of a sweep file."""
    import tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FileNotFoundError(f"--config {path}: cannot read the sweep file ({error.strerror or error})") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    return check(values, Source(str(path), text))


# ---------------------------------------------------------------- values -> command-line arguments
def loss_string(loss) -> str:
    """A loss entry as a ``build()`` string: ``{name = "tversky", alpha = 0.3}`` -> ``"tversky(alpha=0.3)"``."""
    if isinstance(loss, str):
        return loss
    options = {key: value for key, value in loss.items() if key != "name"}
    return loss["name"] + ("(" + ", ".join(f"{key}={value!r}" for key, value in options.items()) + ")" if options else "")


def _dataset_arguments(datasets) -> list[str]:
    """``--datasets`` names, or per table entry: a registry dataset under its own name as
    ``--datasets NAME`` (+ ``--data-root``), another kind as ``--dataset NAME=KIND[:ROOT]``; its
    options as ``--dataset-options NAME={json}``."""
    if not isinstance(datasets, dict):
        return ["--datasets", *datasets]
    names, argv = [], []
    for name, entry in datasets.items():
        kind, root = entry.get("kind", name), entry.get("root")
        options = {key: value for key, value in entry.items() if key not in DATASET_KEYS}
        if kind == name:
            names.append(name)
            argv += ["--data-root", f"{name}={root}"] if root else []
        else:
            argv += ["--dataset", f"{name}={kind}" + (f":{root}" if root else "")]
        argv += ["--dataset-options", f"{name}={json.dumps(options)}"] if options else []
    return (["--datasets", *names] if names else []) + argv


def _setting(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def arguments(values: dict, keep_datasets: bool = True) -> list[str]:
    """Checked ``values`` as ``medsegloss bench`` arguments (``keep_datasets=False``: without the
    datasets, which the command line gives)."""
    argv = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if key == "losses":
            argv += ["--losses", *map(loss_string, value)]
        elif key == "seeds":
            argv += ["--seeds", *map(str, value)]
        elif key == "datasets":
            argv += _dataset_arguments(value) if keep_datasets else []
        elif key == "dataset_options":
            argv += ["--dataset-options", json.dumps(value)]
        elif key == "margins":
            argv += [part for metric, margin in value.items() for part in ("--margin", f"{metric}={margin!r}")]
        elif key in ("no_report", "quiet"):
            argv += [flag] if value else []
        elif isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, _setting(value)]
    return argv


def given_options(parser, argv) -> set[str]:
    """The destinations that ``argv`` itself sets (not by default)."""
    import argparse

    actions = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in actions:
            action.default = default


def file_arguments(path, parser, argv) -> list[str]:
    """The sweep file's options as arguments to put before ``argv``; without its datasets when
    ``argv`` names its own (``--datasets`` / ``--dataset``)."""
    given = given_options(parser, argv)
    return arguments(read(path), keep_datasets=not ({"datasets", "dataset"} & given))


# ---------------------------------------------------------------- the resolved sweep -> OUT/sweep.toml
def resolved(args, base, datasets, losses, seeds, roots) -> dict:
    """The sweep as planned, every setting explicit: what ``OUT/sweep.toml`` holds. Datasets
    get a table each with their kind (when it is not their name), root and the options their
    runs get."""
    from medsegloss.experiment.bench import SWEEP_FIELDS, for_dataset

    values = {"preset": args.preset, "out": str(args.out), "losses": list(losses), "seeds": [int(s) for s in seeds]}
    values.update({key: value for key, value in (("baseline", args.baseline), ("jobs", args.jobs)) if value is not None})
    if tuple(args.shard) != (1, 1):
        values["shard"] = f"{args.shard[0]}/{args.shard[1]}"
    values.update({key: True for key in ("no_report", "quiet") if getattr(args, key, False)})
    for key, value in base.to_dict().items():
        if key not in SWEEP_FIELDS:
            values[key] = "none" if value is None else value
    if base.dataset_options:
        values["dataset_options"] = dict(base.dataset_options)
    if args.margin:
        values["margins"] = dict(args.margin)
    tables = {}
    for name in datasets:
        config = for_dataset(base, name, roots, getattr(args, "named_datasets", None))
        tables[name] = {**({"kind": config.dataset} if config.dataset != name else {}),
                        **({"root": config.data_root} if config.data_root else {}), **config.dataset_options}
    values["datasets"] = tables
    return values


def write_resolved(out, args, base, datasets, losses, seeds, roots) -> Path:
    """``OUT/sweep.toml``: :func:`resolved` as TOML (atomic)."""
    from medsegloss import _io
    from medsegloss._toml import dumps

    text = dumps(resolved(args, base, datasets, losses, seeds, roots),
                 comment="The resolved sweep of this benchmark folder, written by medsegloss bench: every setting\n"
                         "explicit. `medsegloss bench --config THIS_FILE` plans the same runs again (finished ones are\n"
                         "skipped); options given on the command line override the file's. Paths are relative to\n"
                         "the folder medsegloss ran in.")
    return _io.write_text(Path(out) / FILE_NAME, text)
