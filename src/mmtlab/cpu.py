"""The CPU threading policy, chosen before torch starts.

torch runs its CPU operators on an OpenMP thread team (libgomp in the PyPI wheels), one thread per physical core
by default. Between parallel regions libgomp's idle threads spin for about 300,000 iterations before they sleep
(``OMP_WAIT_POLICY`` unset). On a machine where another process is busy on one of those cores, every region then
waits for a thread that the scheduler runs only now and then, and a training step collapses (a tiny `merged`
step on 2 cores beside one busy Python loop: 5.6 samples/s instead of ~100 single-threaded; docs/performance.md).

mmtlab therefore sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) unless the user chose a wait
policy (``OMP_WAIT_POLICY`` or libgomp's ``GOMP_SPINCOUNT``), and ``--threads N`` sets ``OMP_NUM_THREADS`` (and
``torch.set_num_threads``) for the commands that run models. OpenMP reads these variables once, when torch loads
it, so :func:`apply_cpu_policy` must run before ``import torch`` (``mmtlab.cli.main`` calls it before any
command; the command modules keep torch out of their imports).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

from .config import ConfigError

WAIT_POLICY = "PASSIVE"
# Variables by which a user has already chosen how idle OpenMP threads wait: left as they are.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_cpu_policy(threads: int | None = None) -> None:
    """Set the OpenMP wait policy (unless the user set one) and, when given, the number of threads.

    Call before torch is imported: the wait policy cannot change afterwards. ``threads`` also calls
    ``torch.set_num_threads`` when torch is already loaded (the Python API, tests)."""
    if not any(name in os.environ for name in WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads {threads}: give a positive number of threads")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity, e.g. a container's or ``taskset``'s)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def add_threads_option(parser: argparse.ArgumentParser, what: str = "torch") -> None:
    """Add ``--threads N`` to a command that runs models (``what`` says whose threads they are)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"CPU threads for {what} (default: OMP_NUM_THREADS if set, else torch's choice); idle "
                             f"threads sleep (OMP_WAIT_POLICY=PASSIVE) unless OMP_WAIT_POLICY is set")  # fmt: skip


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep up to 1 GiB of freed memory for reuse (process-wide; False where this is not
    glibc). Without it, a CPU forward pass over a batch of pairs frees and maps again its activations (MBs each)
    on every call: a page fault per 4 KB touched, half as much system time as computation when scoring 49 regions
    (docs/evaluation.md, "Speed: system time"); about 4% of a tiny training step."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
