"""The CPU threading policy, chosen before torch starts.

torch runs its CPU operators on an OpenMP thread team (libgomp in the PyPI wheels), one thread per physical core
by default. Between parallel regions libgomp's idle threads spin for about 300,000 iterations before they sleep
(``OMP_WAIT_POLICY`` unset). On a machine where another process is busy on one of those cores, every region then
waits for a thread that the scheduler runs only now and then, and a training step collapses (a tiny `merged`
step on 2 cores beside one busy Python loop: 5.6 samples/s instead of ~100 single-threaded; docs/performance.md).

Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) avoids the collapse but costs a quiet machine half its speed: each
of the thousands of small parallel regions in a tiny step then waits for a woken thread (2 threads, quiet: 118
samples/s passive against 227 spinning and 134 on one thread; docs/performance.md). So before torch starts, a
command that runs models looks at the machine for 0.2 s (:func:`idle_cores`, from ``/proc/stat``):

* every core it may use is idle: OpenMP's own defaults (one thread per core, spinning): nothing is lost;
* some are busy: one thread per idle core (at least one), sleeping at once (``PASSIVE``), so no thread spins
  against a busy core;
* the machine cannot be read: sleeping at once, torch's thread count.

What the user chose is kept: ``--threads N`` (or ``OMP_NUM_THREADS``) fixes the thread count, ``OMP_WAIT_POLICY``
or libgomp's ``GOMP_SPINCOUNT`` the wait. The choice is made once, at start: a job started *later* beside a run on
every core slows it down; ``--threads 1`` (what ``mmtlab study`` and ``mmtlab demo`` give each job) is immune.
OpenMP reads these variables once, when torch loads it, so :func:`apply_cpu_policy` must run before ``import
torch`` (``mmtlab.cli.main`` calls it before any command; the command modules keep torch out of their imports).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

from .config import ConfigError

WAIT_POLICY = "PASSIVE"
# Variables by which a user has already chosen how idle OpenMP threads wait: left as they are.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_cpu_policy(threads: int | None = None, probe: bool = False) -> None:
    """Set the OpenMP wait policy and thread count as the module docstring says (``probe``: look at the machine
    first; without it, or with one thread, idle threads sleep at once unless the user chose a wait).

    Call before torch is imported: the wait policy cannot change afterwards. ``threads`` also calls
    ``torch.set_num_threads`` when torch is already loaded (the Python API, tests)."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: give a positive number of threads")
    asked = threads if threads is not None else _positive_int(os.environ.get("OMP_NUM_THREADS"))
    free = idle_cores() if probe and asked != 1 else None
    if free is not None and asked is None and free < available_cores():
        threads = max(1, free)  # only the idle cores
    wanted = threads or asked or available_cores()
    quiet = free is not None and free >= max(wanted, available_cores())  # a spinning thread takes no one's core
    if not any(name in os.environ for name in WAIT_VARIABLES) and not quiet:
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def idle_cores(interval: float = 0.2, stat: str = "/proc/stat") -> int | None:
    """How many of the cores this process may run on were idle over the next ``interval`` seconds: the number of
    cores less the busy time summed over them (``/proc/stat``'s per-CPU counters), rounded. None where the
    counters cannot be read (not Linux)."""
    cpus = _allowed_cpus()
    try:
        before = _cpu_times(stat, cpus)
        time.sleep(interval)
        after = _cpu_times(stat, cpus)
    except (OSError, ValueError):
        return None
    seen = before.keys() & after.keys()
    if not seen:
        return None
    busy = 0.0
    for cpu in seen:
        d_total, d_idle = after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1]
        busy += 1.0 - d_idle / d_total if d_total > 0 else 0.0
    return max(0, len(seen) - round(busy))


def _cpu_times(stat: str, cpus: set[int] | None) -> dict[int, tuple[int, int]]:
    """``{cpu: (total jiffies, idle + iowait jiffies)}`` of the CPUs in ``cpus`` (every CPU if None)."""
    times = {}
    with open(stat) as f:
        for line in f:
            name, *fields = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit()) or (cpus is not None and int(name[3:]) not in cpus):
                continue
            values = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (sum(values), values[3] + values[4])
    return times


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None


def _positive_int(value: str | None) -> int | None:
    try:
        return int(value) if value and int(value) > 0 else None
    except ValueError:
        return None


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity, e.g. a container's or ``taskset``'s)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def add_threads_option(parser: argparse.ArgumentParser, what: str = "torch") -> None:
    """Add ``--threads N`` to a command that runs models (``what`` says whose threads they are)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"CPU threads for {what} (default: OMP_NUM_THREADS if set, else one per idle core, "
                             f"all of them on a quiet machine); beside busy cores idle threads sleep "
                             f"(OMP_WAIT_POLICY=PASSIVE) unless OMP_WAIT_POLICY is set")  # fmt: skip


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
