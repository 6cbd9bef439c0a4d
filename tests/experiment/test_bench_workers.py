"""``bench --jobs N``'s worker processes: a worker that dies loses no run but its own, which is
trained again (the others finish and count as finished); a bench parent killed with ``kill -9``
leaves no process of it behind (workers, resource tracker), so ``| tee``, CI and ``subprocess``
callers are not held open. Both with real processes and real signals, bounded in time."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medsegloss.experiment import bench
from medsegloss.experiment.config import Config

SRC = str(Path(__file__).resolve().parents[2] / "src")
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not Path("/proc/self/stat").exists(),
                                reason="needs POSIX signals and /proc")
# tiny runs, long enough (steps) that a worker can be caught training
TINY = {"image_size": 16, "base_width": 4, "depth": 1, "batch_size": 4, "patch": 0, "augment": False,
        "metrics": ("dice",), "device": "cpu", "threads": 1, "val_every": 10,
        "dataset_options": {"num_cases": 6, "slices_per_case": 2}, "val_fraction": 0.2, "test_fraction": 0.34}


def _lock_holder(run: Path) -> int | None:
    """The pid written into a run directory's ``.lock`` by the process training there."""
    try:
        words = (run / ".lock").read_text().split()
    except OSError:
        return None
    return int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_worker_loses_only_its_own_run_which_is_trained_again(tmp_path):
    config = Config.preset("default", steps=40, **TINY)
    out, killed = tmp_path / "sweep", []

    def kill_the_first_worker_caught_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for run in sorted(out.glob("phantom-lesion/*/seed0")):
                pid = _lock_holder(run)
                if pid and pid != os.getpid() and _alive(pid) and not (run / "metrics.json").exists():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(run)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_worker_caught_training, daemon=True)
    killer.start()
    outcome = bench.run_sweep(config, ["phantom-lesion"], ["ce", "dice", "focal"], [0], out,
                              quiet=True, jobs=2, estimate=False)
    killer.join(5)
    assert killed, "no worker was caught training"
    assert outcome == {"jobs": 3, "trained": 3, "skipped": 0, "failed": []}
    assert all((run / "metrics.json").exists() for run in out.glob("phantom-lesion/*/seed0"))


def _session(sid: int) -> list[int]:
    """The live processes of session ``sid`` (field 6 of /proc/PID/stat)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_a_bench_killed_with_kill_9_leaves_no_process_behind(tmp_path):
    command = [sys.executable, "-m", "medsegloss", "bench", "--datasets", "phantom-lesion", "--losses", "ce", "dice",
               "--seeds", "0", "--jobs", "2", "--steps", "100000", "--val-every", "100000", "--image-size", "16",
               "--base-width", "4", "--depth", "1", "--patch", "0", "--metrics", "dice", "--threads", "1",
               "--device", "cpu", "--dataset-options", '{"num_cases": 6, "slices_per_case": 2}',
               "--quiet", "--no-report", "--folds", "0", "--out", str(tmp_path / "bench")]
    environment = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own session: every process of it is findable
    try:
        deadline = time.monotonic() + 120
        runs = [tmp_path / "bench" / "phantom-lesion" / loss / "seed0" for loss in ("ce", "dice")]
        while not all(_lock_holder(run) for run in runs):  # both workers are training
            assert parent.poll() is None, parent.stdout.read().decode()
            assert time.monotonic() < deadline, "the workers did not start within 120 s"
            time.sleep(0.1)
        assert len(_session(parent.pid)) >= 3  # the bench, its two workers (and the resource tracker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _session(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session(parent.pid) == []
        parent.stdout.read()  # end of file: nothing holds the bench's output open any more
    finally:
        for pid in _session(parent.pid):  # whatever is left of this test's own session
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        parent.wait(10)
        parent.stdout.close()


def test_the_pool_gives_results_errors_and_retries_a_lost_task_once():
    from medsegloss.experiment.workers import TaskFailed, imap_unordered

    lost = []
    tasks = [(2, 10), ("x",), (signal.SIGKILL,)]
    functions = {0: pow, 1: int, 2: signal.raise_signal}
    results = {}
    for index, task in enumerate(tasks):  # one function per pool: each task gets its own run
        for _, result in imap_unordered(functions[index], [task], 1, retries=1,
                                        on_lost=lambda i, reason: lost.append(reason)):
            results[index] = result
    assert results[0] == 1024
    assert isinstance(results[1], TaskFailed) and str(results[1]).startswith("ValueError: invalid literal")
    assert isinstance(results[2], TaskFailed) and "killed by SIGKILL (2 times)" in str(results[2])
    assert len(lost) == 1 and "killed by SIGKILL" in lost[0]
