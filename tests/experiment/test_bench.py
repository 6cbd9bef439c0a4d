"""The controlled benchmark end to end on a tiny sweep (phantom at 32x32, UNet base 4, 1 epoch):
same initial weights and split for every loss, skip, resume, shards merged == one folder, and
clear errors before any work."""

import json
import shutil

import pytest
import torch

from medsegloss.experiment import bench, report
from medsegloss.experiment.config import Config

# "1.0*ce" is ce written differently: trained from the same weights on the same batches it must
# reach bit-identical weights -- the proof that the sweep controls everything but the loss.
LOSSES = ["ce", "1.0*ce", "dice"]
SEEDS = [0, 1]
DATASETS = ["phantom-lesion"]
TINY = {"image_size": 32, "base_width": 4, "depth": 2, "epochs": 1, "batch_size": 8, "lr": 1e-2,
        "metrics": ("dice", "iou", "pixel_error", "hd95", "assd"), "device": "cpu",
        "dataset_options": {"num_cases": 6, "slices_per_case": 4}, "val_fraction": 0.2, "test_fraction": 0.34}


def tiny_config():
    return Config.preset("default", **TINY)


BUILDS: list[str] = []  # the loss strings the sweep built a loss from, one entry per build


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from medsegloss.losses import LossSpec

    out = tmp_path_factory.mktemp("bench") / "whole"
    build = LossSpec.build
    with pytest.MonkeyPatch.context() as patch:  # count the builds (the one place a loss string becomes a module)
        patch.setattr(LossSpec, "build",
                      lambda spec, *args, **kwargs: BUILDS.append(spec.text) or build(spec, *args, **kwargs))
        outcome = bench.run_sweep(tiny_config(), DATASETS, LOSSES, SEEDS, out, quiet=True)
    return out, outcome


def test_a_sweep_builds_each_loss_once_per_run(sweep):
    """The up-front check reads every loss string without building it; each run builds its loss once."""
    assert sorted(BUILDS) == sorted(loss for loss in LOSSES for _ in SEEDS for _ in DATASETS)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_sweep_layout_and_counts(sweep):
    out, outcome = sweep
    assert outcome == {"jobs": 6, "trained": 6, "skipped": 0, "failed": []}
    for seed in SEEDS:
        for slug in ("ce", "1.0xce", "dice"):
            run = out / "phantom-lesion" / slug / f"seed{seed}"
            assert (run / "metrics.json").exists() and (run / "best.pt").exists()
    assert json.loads((out / "bench.json").read_text())["losses"] == LOSSES


def test_every_loss_starts_from_the_same_weights_and_split(sweep):
    out, _ = sweep
    root = out / "phantom-lesion"
    for seed in SEEDS:
        init = root / "init" / f"seed{seed}.pt"
        configs = [json.loads((root / slug / f"seed{seed}" / "config.json").read_text()) for slug in ("ce", "1.0xce", "dice")]
        assert {c["init_weights"] for c in configs} == {str(init.resolve())}
        splits = {(root / slug / f"seed{seed}" / "split.json").read_text() for slug in ("ce", "1.0xce", "dice")}
        assert len(splits) == 1  # same seed -> same split file
        # the init file is the seed's fresh model, and seeds differ
        from medsegloss.experiment.components import initial_state

        expected = initial_state(tiny_config().replace(seed=seed))
        stored = torch.load(init, weights_only=True)
        assert all(torch.equal(stored[k], expected[k]) for k in expected)
        # same start, same batches, same gradients: ce and 1.0*ce end bit-identical; dice differs
        ce, ce_again, dice = (_weights(root / slug / f"seed{seed}" / "best.pt") for slug in ("ce", "1.0xce", "dice"))
        assert all(torch.equal(ce[k], ce_again[k]) for k in ce)
        assert not all(torch.equal(ce[k], dice[k]) for k in ce)
    first, second = (torch.load(root / "init" / f"seed{s}.pt", weights_only=True) for s in SEEDS)
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_second_invocation_trains_nothing(sweep):
    out, _ = sweep
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    outcome = bench.run_sweep(tiny_config(), DATASETS, LOSSES, SEEDS, out, quiet=True)
    assert outcome == {"jobs": 6, "trained": 0, "skipped": 6, "failed": []}
    changed = [p.name for p, stamp in stamps.items() if p.stat().st_mtime_ns != stamp]
    assert changed == ["bench.json"]  # only the sweep's description is rewritten


def test_interrupted_sweep_resumes_to_the_same_result(sweep, tmp_path, monkeypatch):
    out, _ = sweep
    from medsegloss.experiment import trainer

    finish, calls = trainer.finish_run, []

    def interrupt_second_run(run, *arguments):
        calls.append(run.out)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the 2nd run's last epoch, before metrics.json
        return finish(run, *arguments)

    monkeypatch.setattr(trainer, "finish_run", interrupt_second_run)
    with pytest.raises(KeyboardInterrupt):
        bench.run_sweep(tiny_config(), DATASETS, LOSSES[:2], [0], tmp_path, quiet=True)
    interrupted = tmp_path / "phantom-lesion" / "1.0xce" / "seed0"
    assert (interrupted / "last.pt").exists() and not (interrupted / "metrics.json").exists()
    monkeypatch.setattr(trainer, "finish_run", finish)
    outcome = bench.run_sweep(tiny_config(), DATASETS, LOSSES[:2], [0], tmp_path, quiet=True)
    assert (outcome["trained"], outcome["skipped"]) == (1, 1)
    resumed = json.loads((interrupted / "metrics.json").read_text())
    reference = json.loads((out / "phantom-lesion" / "1.0xce" / "seed0" / "metrics.json").read_text())
    assert resumed["test_rows"] == reference["test_rows"]


def _without_timing(results):
    results = json.loads(json.dumps(results))
    results.pop("cost")
    for run in results["runs"]:
        run.pop("cost")
    return results


def test_shards_merged_equal_the_whole_sweep(sweep, tmp_path):
    out, _ = sweep
    first, second = tmp_path / "shard1", tmp_path / "shard2"
    a = bench.run_sweep(tiny_config(), DATASETS, LOSSES, SEEDS, first, shard=(1, 2), quiet=True)
    b = bench.run_sweep(tiny_config(), DATASETS, LOSSES, SEEDS, second, shard=(2, 2), quiet=True)
    assert (a["jobs"], b["jobs"]) == (3, 3)
    merged = report.write_report([first, second], tmp_path / "merged", figures=False)
    whole = report.write_report([out], tmp_path / "whole-report", figures=False)
    merged_results = json.loads((merged.parent / "results.json").read_text())
    whole_results = json.loads((whole.parent / "results.json").read_text())
    assert _without_timing(merged_results) == _without_timing(whole_results)
    assert merged_results["losses"] == LOSSES and len(merged_results["runs"]) == 6


def test_report_of_real_runs_with_overlays(sweep, tmp_path):
    out, _ = sweep
    shutil.copytree(out, tmp_path / "copy")
    path = report.write_report([tmp_path / "copy"], baseline="ce")
    assert (tmp_path / "copy" / "figures" / "overlays_phantom-lesion.png").exists()
    assert "![Predictions on phantom-lesion](figures/overlays_phantom-lesion.png)" in path.read_text()
    assert (tmp_path / "copy" / "report.html").read_text().count("data:image/png;base64,") == 5  # curves, boxes, differences, ranks, overlays


def test_plan_shards_partition_the_sweep():
    whole = bench.plan(["a", "b"], ["ce", "dice", "focal"], [0, 1, 2])
    parts = [bench.plan(["a", "b"], ["ce", "dice", "focal"], [0, 1, 2], shard=(i, 4)) for i in range(1, 5)]
    assert sorted(map(repr, sum(parts, []))) == sorted(map(repr, whole)) and len(whole) == 18
    assert all(len(part) in (4, 5) for part in parts)
    with pytest.raises(ValueError, match="3/2"):
        bench.plan(["a"], ["ce"], [0], shard=(3, 2))


def test_argument_parsing():
    assert bench.split_losses(["ce,dice", "tversky(alpha=0.3, beta=0.7)", "ce + 0.5*dice"]) == \
        ["ce", "dice", "tversky(alpha=0.3, beta=0.7)", "ce + 0.5*dice"]
    with pytest.raises(ValueError, match="twice: ce"):
        bench.split_losses(["ce", "ce"])
    assert bench.parse_shard("2/4") == (2, 4)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="i/n"):
        bench.parse_shard("2")
    with pytest.raises(argparse.ArgumentTypeError, match="5/4"):
        bench.parse_shard("5/4")
    args = bench.build_parser().parse_args(["--losses", "ce", "focal", "--seeds", "3", "--epochs", "2",
                                            "--base-width", "4"])
    base, datasets, losses, seeds, roots = bench.sweep_from_args(args)
    assert (losses, seeds, list(datasets), roots) == (["ce", "focal"], [3], list(bench.DEFAULT_DATASETS), {})
    assert (base.epochs, base.base_width, base.image_size) == (2, 4, bench.DEFAULT_SETTINGS["image_size"])
    assert (base.steps, base.val_every) == (None, None)  # --epochs: an epoch budget instead of the default steps
    default, *_ = bench.sweep_from_args(bench.build_parser().parse_args([]))
    assert (default.steps, default.schedule, default.patch, default.augment) == (bench.DEFAULT_STEPS, "poly", 48, True)
    paper, *_ = bench.sweep_from_args(bench.build_parser().parse_args(
        ["--preset", "paper", "--data-root", "covid-ct=.", "--data-root", "acdc=."]))
    assert (paper.base_width, paper.image_size, paper.lr, paper.epochs) == (64, 256, 0.01, 100)


def test_paper_preset_without_data_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "paper"
    assert bench.main(["--preset", "paper", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--data-root covid-ct=DIR --data-root acdc=DIR" in error
    assert not out.exists()
    assert bench.main(["--preset", "paper", "--data-root", f"acdc={tmp_path / 'nope'}", "--out", str(out)]) == 2
    assert "nope does not exist" in capsys.readouterr().err


def test_unknown_loss_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "bad"
    assert bench.main(["--losses", "ce", "dcie", "--out", str(out), "--datasets", "phantom-lesion"]) == 2
    assert "dcie" in capsys.readouterr().err and not out.exists()


def test_a_cross_validated_sweep_calls_the_same_loss_written_twice_equivalent(tmp_path):
    """A known truth end to end: `1.0*ce` is `ce`, so over 3 folds every per-case difference is 0
    and the verdict must be *equivalent* (never better/worse); every case is tested once."""
    config = tiny_config().replace(folds=3, epochs=1, metrics=("dice", "pixel_error"))
    out = tmp_path / "cv"
    outcome = bench.run_sweep(config, DATASETS, ["ce", "1.0*ce"], [0], out, quiet=True)
    assert outcome["trained"] == 6 and not outcome["failed"]
    assert sorted(p.name for p in (out / "phantom-lesion" / "ce" / "seed0").iterdir()) == ["fold0", "fold1", "fold2"]
    folds = json.loads((out / "phantom-lesion" / "folds" / "seed0.json").read_text())["splits"]
    assert sorted(case for fold in folds for case in fold["test"]) == [f"lesion{i:03d}" for i in range(6)]
    report.write_report([out], figures=False)
    results = json.loads((out / "results.json").read_text())
    tests = {row["metric"]: row for row in results["tests"]}
    assert tests["dice"]["mean_difference"] == 0 and tests["dice"]["n_runs"] == 3 and tests["dice"]["n_units"] == 6
    assert tests["pixel_error"]["verdict"] == "equivalent"
    if not any(run["diagnostics"]["status"] in ("not learned", "collapsed") for run in results["runs"]):
        assert tests["dice"]["verdict"] == "equivalent"
    assert results["design"]["phantom-lesion"]["folds"] == 3
