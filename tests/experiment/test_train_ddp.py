"""DistributedDataParallel: two CPU processes (gloo) under torchrun shard the training data,
gather the validation/test predictions to rank 0, and rank 0 alone writes the run."""

import json
import os
import subprocess
import sys

import torch

from medsegloss import data
from medsegloss.experiment.inference import load_checkpoint
from medsegloss.experiment.evaluation import evaluate_model
from medsegloss.metrics import summarize


def test_two_process_gloo_run_matches_a_single_process_evaluation(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "medsegloss", "train", "--dataset", "phantom-cardiac", "--image-size", "32",
               "--base-width", "4", "--depth", "2", "--epochs", "2", "--batch-size", "3", "--lr", "0.01",
               "--dataset-options", '{"num_cases": 5, "slices_per_case": 3}', "--loss", "ce + 1.0*dice",
               "--device", "cpu", "--out", str(out), "--quiet",
               "--metrics", "dice,iou,pixel_error", "--schedule", "constant", "--no-augment"]  # the Config() defaults
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    if finished.returncode != 0 and "Signal 6 (SIGABRT)" in finished.stderr and not (out / "metrics.json").exists():
        # seen twice, only while other test sessions ran torchrun on this machine at the same time
        # (a rendezvous port taken between torchrun's choice and Gloo's bind aborts a rank): one
        # fresh try; a real failure of the run fails again
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        finished = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 9 training slices sharded over 2 ranks: 5 each (padded), 2 steps of 3 per epoch
    assert [line["step"] for line in lines] == [2, 4]
    assert not list(out.glob(".*.tmp"))
    # rank 0's gathered scores equal one process scoring the saved best model
    model, config = load_checkpoint(out / "last.pt")  # the tested model: the final weights (select last)
    torch.set_num_threads(1)
    options = dict(size=32, split_file=str(out / "split.json"), **config.dataset_options)
    test = data.get_dataset("phantom-cardiac", split="test", **options)
    val = data.get_dataset("phantom-cardiac", split="val", **options)
    assert evaluate_model(model, test) == result["test_rows"]
    assert summarize(evaluate_model(model, val)) == result["val"]
    assert len(result["test_rows"]) == 3 * len(test.cases)
