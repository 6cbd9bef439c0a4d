"""Peak memory of one training run, also when one process runs many (``medsegloss bench``).

On CUDA the peak is ``torch.cuda.max_memory_allocated`` since the last reset. On Linux CPUs the
peak resident set size (VmHWM in ``/proc/self/status``) is reset by writing ``5`` to
``/proc/self/clear_refs``, so each run reports its own peak: at least the memory the process
already held when the run started (freed memory the allocator kept counts), plus what the run
added. Where that reset is unavailable (macOS, Windows) the peak is ``ru_maxrss``: the whole
process's peak so far.
"""

from __future__ import annotations

import torch

_CLEAR_REFS, _STATUS = "/proc/self/clear_refs", "/proc/self/status"


def reset_peak_memory(device: torch.device) -> bool:
    """Start the peak-memory count now; False where the CPU peak cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM) to the current RSS
        with open(_CLEAR_REFS, "w") as file:
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
        with open(_STATUS) as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere
