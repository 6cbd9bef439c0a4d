"""What a run costs: its peak memory (also when one process runs many, as ``medsegloss bench``
does) and a step time robust to a busy machine."""

from __future__ import annotations

import math
import statistics
import sys

import torch

# Peak memory of one run, also when one process runs many (``medsegloss bench``). On CUDA:
# torch.cuda.max_memory_allocated since the last reset. On Linux CPUs the peak resident set size
# (VmHWM in /proc/self/status) is reset by writing 5 to /proc/self/clear_refs, so each run reports
# its own peak: at least the memory the process already held when the run started, plus what the
# run added. Where that reset is unavailable (macOS, Windows): ru_maxrss, the process's peak so far.
CLEAR_REFS, PROCESS_STATUS = "/proc/self/clear_refs", "/proc/self/status"


def reset_peak_memory(device: torch.device) -> bool:
    """Start the peak-memory count now; False where the CPU peak cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM) to the current RSS
        with open(CLEAR_REFS, "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB since :func:`reset_peak_memory`: allocated CUDA memory on a GPU; the
    peak resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open(PROCESS_STATUS) as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def median_seconds_per_step(step_times) -> float:
    """The median of the measured seconds of each optimizer step: robust to the slow first step
    (allocation, autotuning) and to pauses when other jobs take the machine, which would inflate
    a mean. Raises ``ValueError`` when no finite, non-negative time is given."""
    times = [float(t) for t in step_times]
    bad = [t for t in times if not (math.isfinite(t) and t >= 0)]
    if bad:
        raise ValueError(f"step times must be finite and >= 0 seconds, got {bad[:5]}")
    if not times:
        raise ValueError("no step times: the run made no optimizer step")
    return float(statistics.median(times))
