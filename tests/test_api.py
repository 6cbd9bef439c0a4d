"""The Python API: docs/python.md run as a walk-through on tiny settings (every ```python block,
in order, in one namespace), its tables checked against the report's own files; clear errors
before any work; a plain script without a ``__main__`` guard sweeping with ``jobs=2``."""

import csv
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import medsegloss
from medsegloss import api
from medsegloss.experiment import bench

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).parents[1] / "docs" / "python.md"
TINY = dict(steps=4, val_every=2, image_size=16, base_width=4, depth=1, patch=0, batch_size=4, device="cpu",
            dataset_options={"num_cases": 6})
TINY_SWEEP = dict(TINY, folds=2, metrics=["dice", "iou", "pixel_error"], quiet=True, figures=False, jobs=1)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a page (```py blocks are shown, not run: they need the user's data)."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """docs/python.md executed in a fresh folder, every call with the tiny settings on top."""
    folder = tmp_path_factory.mktemp("walkthrough")
    patch = pytest.MonkeyPatch()
    run, train, report = api.run, api.train, api.report
    patch.setattr(medsegloss.bench, "run", lambda *args, **kw: run(*args, **{**kw, **TINY_SWEEP}))
    patch.setattr(api, "train", lambda *args, **kw: train(*args, **{**kw, **TINY, "quiet": True}))
    patch.setattr(api, "report", lambda *args, **kw: report(*args, **{**kw, "figures": False}))
    patch.chdir(folder)
    namespace = {}
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    yield folder, namespace
    patch.undo()


def csv_means(path: Path) -> dict:
    with open(path) as file:
        return {(row["dataset"], row["loss"], key[:-5]): float(value) if value else math.nan
                for row in csv.DictReader(file) for key, value in row.items() if key.endswith("_mean")}


def test_table_means_equal_results_csv(walkthrough):
    folder, namespace = walkthrough
    results, means = namespace["results"], namespace["means"]
    expected = csv_means(folder / "runs" / "walkthrough" / "results.csv")
    assert len(expected) == 2 * 3  # 2 losses x 3 metrics
    for key, value in expected.items():
        assert means[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    table = namespace["table"]
    assert list(table.columns) == list(api.TABLE_COLUMNS)
    assert len(table) == len(results.data["cases"]) * 3 and set(table["fold"]) == {0, 1}  # 2-fold CV


def test_paired_ranks_and_verdict_are_the_reports(walkthrough):
    folder, namespace = walkthrough
    data = json.loads((folder / "runs" / "walkthrough" / "results.json").read_text())
    paired = namespace["paired"]
    assert paired[["loss", "metric", "verdict"]].values.tolist() == [[t["loss"], t["metric"], t["verdict"]]
                                                                    for t in data["tests"]]
    assert namespace["results"].ranks()["loss"].tolist() == [row["loss"] for row in data["ranks"]]
    from medsegloss.experiment.report.answer import answer_lines

    verdict = namespace["verdict"]
    assert verdict.answer == answer_lines(data) and str(verdict).endswith(answer_lines(data)[-1])
    assert verdict.ready == (not verdict.not_ready)


def test_another_baseline_negates_the_paired_differences(walkthrough):
    _, namespace = walkthrough
    first = {(t["loss"], t["metric"]): t for t in namespace["results"].data["tests"]}
    other = {(t["loss"], t["metric"]): t for t in namespace["against_tversky"].data["tests"]}
    tversky = "tversky(alpha=0.3, beta=0.7)"
    for metric in ("dice", "iou", "pixel_error"):
        difference = first[(tversky, metric)]["mean_difference"]
        if difference is not None:
            assert other[("ce", metric)]["mean_difference"] == pytest.approx(-difference, abs=1e-12)
    assert namespace["against_tversky"].data["margins"]["dice"] == 0.02


def test_html_shows_the_banner_answer_and_main_table(walkthrough):
    _, namespace = walkthrough
    results = namespace["results"]
    page = results._repr_html_()
    assert ("Verdict ready" in page) == results.verdict.ready and "<table>" in page
    assert "tversky(alpha=0.3, beta=0.7)" in page and "<th" in page
    first_words = re.sub(r"[*].+?[*]", "", results.verdict.answer[0]).split(":")[0]
    assert first_words in page
    assert repr(results).startswith(f"Results of {results.out}: verdict")


def test_without_pandas_the_tables_are_lists_of_dicts(walkthrough, monkeypatch):
    folder, namespace = walkthrough
    frame = namespace["table"]
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    rows = medsegloss.Results.read(folder / "runs" / "walkthrough").table()
    assert isinstance(rows, list) and len(rows) == len(frame)
    assert [row["value"] for row in rows] == pytest.approx(frame["value"].tolist(), nan_ok=True)
    assert rows[0].keys() == set(api.TABLE_COLUMNS)


def test_train_returns_its_metrics_json(walkthrough):
    folder, namespace = walkthrough
    run = namespace["run"]
    stored = json.loads((folder / "runs" / "one-run" / "metrics.json").read_text())
    assert run["out"] == "runs/one-run" and run["test_rows"] == stored["test_rows"] and run["steps"] == 4


def test_the_sweep_toml_of_the_api_reproduces_its_plan(walkthrough, capsys):
    folder, _ = walkthrough
    out = folder / "runs" / "walkthrough"
    before = json.loads((out / "bench.json").read_text())
    assert bench.main(["--config", str(out / "sweep.toml"), "--no-report"]) == 0
    assert "0 trained, 4 skipped" in capsys.readouterr().out
    after = json.loads((out / "bench.json").read_text())
    assert {k: v for k, v in after.items() if k != "command"} == {k: v for k, v in before.items() if k != "command"}


@pytest.mark.parametrize("arguments, message", [
    ({"stpes": 4}, "medsegloss.bench.run: stpes: unknown key (did you mean: steps"),
    ({"steps": "ten"}, 'medsegloss.bench.run: steps: must be an integer or "none"'),
    ({"shard": "1/2"}, "medsegloss.bench.run: shard: unknown key"),
    ({"losses": ["ce", "no_such_loss"]}, "no_such_loss"),
    ({"baseline": "dice"}, "--baseline 'dice' is not one of the sweep's losses"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, arguments, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(message)):
        api.run(**{"losses": ["ce"], "out": out, **arguments})  # (the walkthrough patches medsegloss.bench.run)
    assert not out.exists()


def test_a_script_without_main_guard_sweeps_with_two_workers(tmp_path):
    script = tmp_path / "sweep.py"
    settings = {**TINY, "folds": 0, "metrics": ["dice"], "quiet": True, "figures": False}
    script.write_text(textwrap.dedent(f"""\
        import medsegloss

        results = medsegloss.bench.run(losses=["ce", "dice"], datasets=["phantom-lesion"], out="out", jobs=2,
                                       **{settings!r})
        print("SWEPT", len(results.data["runs"]), "runs,", len(results.failed), "failed")
        """))
    environment = {**os.environ, "PYTHONPATH": str(Path(medsegloss.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("SWEPT") == 1 and "SWEPT 2 runs, 0 failed" in done.stdout  # the workers did not re-run it


def test_workers_rerun_a_script_that_registers_its_own_losses(monkeypatch):
    import types

    from medsegloss import losses

    script = types.ModuleType("__main__")
    script.__file__ = "sweep.py"
    factory = type("MyLoss", (), {"__module__": "__main__"})
    monkeypatch.setattr(losses, "available", lambda: ["ce", "mine"])
    real_info = losses.info
    monkeypatch.setattr(losses, "info", lambda name: types.SimpleNamespace(factory=factory) if name == "mine"
                        else real_info(name))
    monkeypatch.setitem(sys.modules, "__main__", script)
    with api._workers_without_script(2):
        assert script.__file__ == "sweep.py"  # kept: the workers need its losses
    monkeypatch.setattr(losses, "available", lambda: ["ce"])
    with api._workers_without_script(2):
        assert not hasattr(script, "__file__") and script.__spec__ is None
    assert script.__file__ == "sweep.py"


def test_importing_the_api_does_no_heavy_work():
    code = "import sys, medsegloss, medsegloss.bench; medsegloss.Results; print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    environment = {**os.environ, "PYTHONPATH": str(Path(medsegloss.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
