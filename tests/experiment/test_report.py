"""The report on run directories fabricated in the format `fit` writes (no training): tables,
numbers, merging of shard folders, files written, CLI errors."""

import csv
import json
import math

import numpy as np
import pytest

from medsegloss.experiment import report
from medsegloss.experiment.report.analysis import analyse, find_runs
from medsegloss._io import write_json, write_text
from medsegloss.experiment.config import Config, loss_slug

CASES = ["case01", "case02", "case03", "case04", "case05", "case06"]


def fabricate_run(out, dataset, loss, seed, dice_by_case, *, finished=True, epochs=3, classes=(1,)):
    """A run directory as `fit` writes it; Dice per case given, IoU and pixel error derived."""
    config = Config(dataset=dataset, loss=loss, seed=seed, epochs=epochs).to_dict()
    run = out / dataset / loss_slug(loss) / f"seed{seed}"
    write_json(run / "config.json", config)
    lines = [{"epoch": e, "step": 4 * e, "train_loss": 1.0 / e, "terms": {loss: 1.0 / e},
              "val": [{"class": 1, "metric": "dice", "mean": 0.5 + 0.1 * e}], "val_dice": 0.5 + 0.1 * e,
              "lr": 1e-3, "seconds": 1.0} for e in range(1, epochs + 1)]
    write_text(run / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    if not finished:
        return run
    rows = []
    for case, dice in zip(CASES, dice_by_case):
        for c in classes:
            rows.append({"case": case, "class": c, "dice": dice, "iou": dice / (2 - dice),
                         "pixel_error": (1 - dice) / 10, "hd95": 10 * (1 - dice), "assd": math.nan if dice == 0 else 2 * (1 - dice),
                         "empty": "none"})
    write_json(run / "metrics.json", {
        "config": config, "epochs": epochs, "best_epoch": epochs, "val": lines[-1]["val"], "test_rows": rows,
        "test": [], "cost": {"seconds_per_step": 0.01 * (1 + len(loss)), "peak_memory_mb": 100.0, "train_seconds": 3.0}})
    return run


def fabricate_bench(out, seeds=(0, 1), losses=("ce", "dice", "ce + 1.0*dice"), datasets=("lesion", "cardiac")):
    generator = np.random.default_rng(0)
    for dataset in datasets:
        for seed in seeds:
            base = generator.uniform(0.5, 0.8, len(CASES))
            for shift, loss in enumerate(losses):
                dice = np.clip(base + 0.03 * shift + generator.normal(0, 0.005, len(CASES)), 0, 1)
                fabricate_run(out, dataset, loss, seed, dice.tolist())
    write_json(out / "bench.json", {"datasets": list(datasets), "losses": list(losses), "seeds": list(seeds)})


def test_analyse_numbers_and_order(tmp_path):
    fabricate_bench(tmp_path)
    results = analyse(find_runs([tmp_path]))
    assert results["datasets"] == ["lesion", "cardiac"]  # the bench's order, not alphabetical
    assert results["losses"] == ["ce", "dice", "ce + 1.0*dice"]
    assert results["metrics"] == ["dice", "iou", "pixel_error", "hd95", "assd"]
    assert results["baseline"] == "ce" and results["seeds"] == [0, 1]
    # the summary of (lesion, dice, Dice) recomputed from the fabricated files
    per_seed = []
    for seed in (0, 1):
        data = json.loads((tmp_path / "lesion" / "dice" / f"seed{seed}" / "metrics.json").read_text())
        per_seed.append(np.mean([row["dice"] for row in data["test_rows"]]))
    row = next(r for r in results["summary"] if (r["dataset"], r["loss"], r["metric"]) == ("lesion", "dice", "dice"))
    assert row["mean"] == pytest.approx(np.mean(per_seed))
    assert row["std_seeds"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["n_cases"] == 12 and row["n_seeds"] == 2
    # every loss is 0.03 better per step on all 12 (seed, case) pairs: significant, "better"
    test = next(r for r in results["tests"] if (r["dataset"], r["loss"], r["metric"]) == ("lesion", "ce + 1.0*dice", "dice"))
    assert test["verdict"] == "better" and test["n"] == 12 and test["mean_difference"] == pytest.approx(0.06, abs=0.02)
    pixel = next(r for r in results["tests"] if (r["dataset"], r["loss"], r["metric"]) == ("lesion", "dice", "pixel_error"))
    assert pixel["mean_difference"] < 0  # lower pixel error: the sign the verdict reads
    from medsegloss.experiment.report.statistics import verdict_word
    assert pixel["verdict"] == verdict_word(-pixel["mean_difference"], -pixel["ci_high"], -pixel["ci_low"],
                                            pixel["p_holm"], pixel["margin"])
    assert [r["loss"] for r in results["ranks"]] == ["ce + 1.0*dice", "dice", "ce"]
    assert results["ranks"][0]["mean_rank"] == 1.0
    cost = {(r["dataset"], r["loss"]): r for r in results["cost"]}
    assert cost[("lesion", "dice")]["seconds_per_step"] == pytest.approx(0.05)
    json.dumps(results, allow_nan=False)  # standard JSON: NaN became null


def test_baseline_choice_and_missing_baseline(tmp_path):
    fabricate_bench(tmp_path, losses=("dice", "ce + 1.0*dice"))
    results = analyse(find_runs([tmp_path]))  # no ce run: the first loss is the baseline
    assert results["baseline"] == "dice"
    with pytest.raises(ValueError, match=r"baseline 'ce' is not a loss of these runs; their losses: 'dice', 'ce \+ 1.0\*dice'"):
        analyse(find_runs([tmp_path]), baseline="ce")
    assert {r["loss"] for r in results["tests"]} == {"ce + 1.0*dice"}
    results = analyse(find_runs([tmp_path]), baseline="ce + 1.0*dice")
    assert results["losses"][0] == "ce + 1.0*dice"


def test_unfinished_runs_are_listed_not_counted(tmp_path):
    fabricate_bench(tmp_path, seeds=(0,))
    unfinished = fabricate_run(tmp_path, "lesion", "focal", 0, [], finished=False)
    results = analyse(find_runs([tmp_path]))
    assert "focal" not in results["losses"]
    assert results["unfinished"] == [str(unfinished)]


def test_merging_shard_folders_equals_one_folder(tmp_path):
    whole, first, second = tmp_path / "whole", tmp_path / "a", tmp_path / "b"
    fabricate_bench(whole)
    fabricate_bench(first)
    fabricate_bench(second)
    # split the same runs between two folders: seed 0 in a, seed 1 in b
    import shutil

    for dataset in ("lesion", "cardiac"):
        for loss in ("ce", "dice", "ce + 1.0*dice"):
            shutil.rmtree(first / dataset / loss_slug(loss) / "seed1")
            shutil.rmtree(second / dataset / loss_slug(loss) / "seed0")
    assert analyse(find_runs([first, second])) == analyse(find_runs([whole]))
    with pytest.raises(ValueError, match="found twice"):
        analyse(find_runs([whole, first]))


def test_no_runs_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no finished run"):
        analyse(find_runs([tmp_path]))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        analyse(find_runs([tmp_path / "nowhere"]))


def test_write_report_files(tmp_path):
    fabricate_bench(tmp_path)
    path = report.write_report([tmp_path], overlays=False)
    markdown = path.read_text()
    assert path == tmp_path / "REPORT.md"
    # the paper's layout: loss x (Dice, IoU, pixel error) per dataset, best in bold
    header = "| loss | lesion Dice | lesion IoU | lesion pixel error (%) | cardiac Dice | cardiac IoU | cardiac pixel error (%) |"
    assert header in markdown
    best_line = next(line for line in markdown.splitlines() if line.startswith("| ce + 1.0\\*dice |"))
    assert best_line.count("**") == 12  # best in all 6 columns
    assert "## Answer" in markdown and ("better" in markdown or "inconclusive" in markdown)
    assert "![Validation Dice per step](figures/validation_curves.png)" in markdown
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(analyse(find_runs([tmp_path]))))
    with open(tmp_path / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 and rows[0]["loss"] == "ce" and rows[0]["dice_verdict"] == "baseline"
    summary = next(r for r in results["summary"] if (r["dataset"], r["loss"], r["metric"]) == ("lesion", "dice", "iou"))
    assert float(rows[1]["iou_mean"]) == pytest.approx(summary["mean"])
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<b>" in page and "<table>" in page  # + differences, ranks
    from PIL import Image

    for name in ("validation_curves.png", "dice_boxes.png", "differences.png", "rank_blobs.png"):
        with Image.open(tmp_path / "figures" / name) as image:
            assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_cli(tmp_path, capsys):
    fabricate_bench(tmp_path)
    dest = tmp_path / "merged"
    assert report.main([str(tmp_path), "--dest", str(dest), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "| loss | lesion Dice" in printed and str(dest / "REPORT.md") in printed
    assert (dest / "results.json").exists() and not (dest / "figures").exists()
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_arguments_are_checked_before_any_work(tmp_path, capsys):
    fabricate_bench(tmp_path)
    (tmp_path / "afile").write_text("")
    cases = [(["--baseline", "nosuch"], "baseline 'nosuch' is not a loss of these runs"),
             (["--alpha", "5"], "argument --alpha: expected a significance level in (0, 1)"),
             (["--alpha", "nan"], "argument --alpha"),
             (["--metrics", "dice", "bogus"], "argument --metrics: unknown metric 'bogus'"),
             (["--dest", str(tmp_path / "afile")], f"--dest {tmp_path / 'afile'} is a file, not a folder")]
    for flags, message in cases:
        try:
            code = report.main([str(tmp_path), "--no-figures", *flags])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        assert code == 2, flags
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error, error
    assert not (tmp_path / "REPORT.md").exists()


def test_names_users_chose_cannot_break_the_report(tmp_path):
    """A loss, dataset and case named like `p$\\foo{$.png` (mathtext), `<script>` (HTML), `|` and
    `*` (Markdown): the report is written, and shows each name literally."""
    import html
    import re

    from medsegloss.experiment.report.figures import plot_overlays

    loss, dataset = "p$\\foo{$|*x*_`y`", "d<script>alert(1)</script>"
    fabricate_bench(tmp_path, losses=("ce", loss), datasets=(dataset,))
    path = report.write_report([tmp_path], baseline=loss, overlays=False)
    markdown, page = path.read_text(), (tmp_path / "report.html").read_text()
    assert html.escape(loss) in page and html.escape(dataset) in page and "<script>" not in page
    assert f"<h2>Against {html.escape(loss)}</h2>" in page
    escaped = "p\\$\\\\foo{\\$\\|\\*x\\*\\_\\`y\\`"
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {escaped} |"))
    header = next(line for line in markdown.splitlines() if line.startswith("| loss |"))
    unescaped_bars = lambda line: len(re.findall(r"(?<!\\)\|", line))  # noqa: E731
    assert unescaped_bars(row) == unescaped_bars(header)  # the | in the name does not add a column
    assert "d&lt;script>alert(1)&lt;/script>" in markdown
    assert page.count("data:image/png;base64,") == 4  # every figure drawn with the names as labels
    image = np.zeros((8, 8))
    panel = {"image": image, "label": image.astype(int), "predictions": {loss: image.astype(int)},
             "name": "p$\\foo{$.png slice 0", "dice": {loss: 0.5}}
    figure = plot_overlays([panel], [loss], tmp_path / "overlay.png", title=f"{dataset} $\\frac{{$",
                           class_names=["background", "$\\x{$"])
    assert figure.stat().st_size > 0
