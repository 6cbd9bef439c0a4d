"""Sweeps in a file (``medsegloss bench --config sweep.toml``): the TOML writer round-trips
through the standard library's reader, key lines are found, the command line overrides the file,
the resolved ``OUT/sweep.toml`` plans the same runs again, and bad files fail in one line naming
the key and its line, before any work."""

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medsegloss._toml import dumps, key_line
from medsegloss.experiment import bench, sweepfile

# ---------------------------------------------------------------- the writer and the line finder
keys = st.text(max_size=8)
scalars = (st.text(max_size=12) | st.integers(min_value=-2**63, max_value=2**63 - 1) | st.booleans()
           | st.floats(allow_nan=False))
inline = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=8)
documents = st.recursive(st.dictionaries(keys, inline, max_size=4),
                         lambda tables: st.dictionaries(keys, tables | inline, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_dumps_round_trips_through_tomllib(document):
    assert tomllib.loads(dumps(document)) == document


def test_dumps_writes_special_floats_and_refuses_none():
    loaded = tomllib.loads(dumps({"a": math.inf, "b": -math.inf, "c": math.nan, "d": 1e-5}))
    assert loaded["a"] == math.inf and loaded["b"] == -math.inf and math.isnan(loaded["c"]) and loaded["d"] == 1e-5
    with pytest.raises(TypeError, match="'x.y'"):
        dumps({"x": {"y": None}})


TEXT = """\
# a comment
steps = 4
losses = [
  "ce",
  {name = "tversky", alpha = 0.3},
  {name = "focal",
   gamma = 2},
]
dotted.key = 1

[datasets.phantom-lesion]
num_cases = 6

[datasets."my.data"]
kind = "folder"
"""


@pytest.mark.parametrize("path, line", [
    (("steps",), 2), (("losses",), 3), (("losses", 0), 4), (("losses", 1), 5), (("losses", 2, "gamma"), 7),
    (("losses", 1, "alpha"), 5), (("dotted", "key"), 9), (("datasets", "phantom-lesion"), 11),
    (("datasets", "phantom-lesion", "num_cases"), 12), (("datasets", "my.data", "kind"), 15), (("absent",), None)])
def test_key_line(path, line):
    assert key_line(TEXT, path) == line


# ---------------------------------------------------------------- bench --config
TINY = {"steps": 4, "val_every": 2, "image_size": 16, "base_width": 4, "depth": 1, "folds": 0, "patch": "none",
        "metrics": ["dice", "iou"], "device": "cpu", "batch_size": 4}
SWEEP = """\
losses = ["ce", {name = "tversky", alpha = 0.3, beta = 0.7}]
seeds = [0]
steps = 8          # the command line gives --steps 4
test_fraction = 0.34

[margins]
dice = 0.02

[datasets.phantom-lesion]
num_cases = 6
"""


def write_sweep(folder: Path, text: str, **settings) -> Path:
    head = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    path = folder / "sweep.toml"
    path.write_text(head + text)
    return path


def resolve(argv):
    """(base, datasets, losses, seeds, roots, args) as ``medsegloss bench`` resolves ``argv``."""
    parser = bench.build_parser()
    args = parser.parse_args(argv)
    if args.config:
        args = parser.parse_args(sweepfile.file_arguments(args.config, parser, argv) + argv)
    return (*bench.sweep_from_args(args), args)


def planned_configs(argv) -> dict:
    base, datasets, losses, seeds, roots, args = resolve(argv)
    folds = {d: bench.fold_count(bench.for_dataset(base, d, roots, args.named_datasets)) for d in datasets}
    jobs = bench.plan(datasets, losses, seeds, args.shard, folds)
    return {job: config.to_dict() for job, config in
            bench.configs(base, jobs, Path(args.out), roots, args.named_datasets).items()}


def test_bench_config_runs_the_file_and_its_resolved_copy_plans_the_same(tmp_path, capsys):
    out = tmp_path / "out"
    settings_ = {key: value for key, value in TINY.items() if key != "steps"}
    path = write_sweep(tmp_path, SWEEP, **settings_)
    argv = ["--config", str(path), "--steps", "4", "--out", str(out), "--quiet", "--no-report"]
    assert bench.main(argv) == 0
    assert "2 trained, 0 skipped" in capsys.readouterr().out
    resolved = out / "sweep.toml"
    values = tomllib.loads(resolved.read_text())
    assert values["steps"] == 4 and values["losses"] == ["ce", "tversky(alpha=0.3, beta=0.7)"]
    assert values["datasets"] == {"phantom-lesion": {"num_cases": 6}} and values["margins"] == {"dice": 0.02}
    original = planned_configs(argv)
    assert len(original) == 2 and planned_configs(["--config", str(resolved)]) == original
    assert bench.main(["--config", str(resolved), "--no-report"]) == 0  # the resolved copy: nothing to train
    assert "0 trained, 2 skipped" in capsys.readouterr().out
    assert {(job.loss, job.seed) for job in original} == {("ce", 0), ("tversky(alpha=0.3, beta=0.7)", 0)}


def test_command_line_overrides_the_file_and_repeatable_flags_add(tmp_path):
    path = write_sweep(tmp_path, SWEEP, **{key: value for key, value in TINY.items() if key != "steps"})
    base, datasets, losses, seeds, _, args = resolve(["--config", str(path), "--margin", "iou=0.05", "--seeds", "3"])
    assert base.steps == 8 and base.image_size == 16 and seeds == [3] and datasets == ["phantom-lesion"]
    assert dict(args.margin) == {"dice": 0.02, "iou": 0.05}
    base, datasets, *_ = resolve(["--config", str(path), "--steps", "4", "--datasets", "phantom-cardiac"])
    assert base.steps == 4 and datasets == ["phantom-cardiac"]  # --datasets replaces the file's datasets


def test_a_registry_dataset_keeps_its_root_and_its_own_options(tmp_path):
    base, datasets, _, _, roots, args = resolve(["--datasets", "folder", "--data-root", f"folder={tmp_path}",
                                                 "--dataset-options", 'folder={"group": "x"}'])
    config = bench.for_dataset(base, "folder", roots, args.named_datasets)
    assert (config.data_root, config.dataset_options["group"]) == (str(tmp_path), "x")


@pytest.mark.parametrize("text, message", [
    ("losses = ['ce']\nstpes = 4\n", "sweep.toml line 2: stpes: unknown key (did you mean: steps"),
    ("steps = 'ten'\n", 'sweep.toml line 1: steps: must be an integer or "none", got string'),
    ("augment = 1\n", "sweep.toml line 1: augment: must be true or false, got integer 1"),
    ("metrics = ['dice', 2]\n", "sweep.toml line 1: metrics: must be a list of strings"),
    ("losses = [\n  'ce',\n  {alpha = 0.3},\n]\n", "sweep.toml line 3: losses: loss 2 is a table without name"),
    ("seeds = 0\n", "sweep.toml line 1: seeds: must be a list of integers, got integer 0"),
    ("[datasets.liver]\nkind = 'nnunet'\nroot = 3\n", "sweep.toml line 3: datasets.liver.root: must be a string"),
    ("[margins]\ndice = 'small'\n", "sweep.toml line 2: margins.dice: must be a number"),
    ("shard = '3/2'\n", "sweep.toml line 1: shard: i/n needs 1 <= i <= n"),
    ("preset = 'fast'\n", "sweep.toml line 1: preset: must be a string (default or paper)"),
    ("steps = 4 4\n", "sweep.toml: not valid TOML: "),
])
def test_bad_files_fail_in_one_line_naming_the_key_and_its_line(tmp_path, capsys, text, message):
    (tmp_path / "sweep.toml").write_text(text)
    out = tmp_path / "out"
    assert bench.main(["--config", str(tmp_path / "sweep.toml"), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"medsegloss bench: error: {tmp_path / 'sweep.toml'}") and "\n" not in error
    assert message in error
    assert not out.exists()  # before any work


def test_python_values_are_checked_like_a_file():
    with pytest.raises(ValueError, match="medsegloss.bench.run: steps: must be an integer"):
        sweepfile.check({"steps": 2.5}, sweepfile.Source("medsegloss.bench.run"))
    assert sweepfile.arguments({"losses": ["ce", {"name": "focal", "gamma": 2}], "augment": False, "patch": None,
                                "metrics": ("dice", "hd95"), "loss_options": {"alpha": 0.3}}) == [
        "--losses", "ce", "focal(gamma=2)", "--no-augment", "--patch", "none", "--metrics", "dice,hd95",
        "--loss-options", '{"alpha": 0.3}']


def test_the_documented_sweep_file_is_valid(tmp_path):
    text = (Path(__file__).parents[2] / "docs" / "benchmark.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sweep.toml").write_text(example)
    values = sweepfile.read(tmp_path / "sweep.toml")
    argv = sweepfile.arguments(values)
    assert "--dataset" in argv and "liver=nnunet:/data/Dataset003_Liver" in argv
    assert argv[argv.index("--losses") + 3] == "tversky(alpha=0.3, beta=0.7)"
