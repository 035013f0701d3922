"""Where and how a run executes: device, seed and run mode.

Everything here is resolved when called, never at import time, so importing
``spectral_lab`` changes nothing about the process (no precision switch, no
device probing, no seeding).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

DEVICE_ENV = "SPECTRAL_LAB_DEVICE"
MODE_ENV = "SPECTRAL_LAB_MODE"
THREADS_ENV = "SPECTRAL_LAB_THREADS"
RUN_MODES = ("quick", "full")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``device`` to a concrete :class:`torch.device`.

    ``"auto"`` looks, in order, at the ``SPECTRAL_LAB_DEVICE`` environment
    variable, then CUDA, then Apple's MPS, then the CPU. An explicit device that
    is not available raises a ``ValueError`` instead of silently falling back,
    because a run that quietly lands on the CPU can take hours longer.
    """
    if isinstance(device, torch.device):
        requested = device
    else:
        if not isinstance(device, str) or not device.strip():
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}"
            )
        name = device.strip().lower()
        if name == "auto":
            override = os.environ.get(DEVICE_ENV, "").strip()
            if override and override.lower() != "auto":
                return get_device(override)
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            requested = torch.device(name)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from err
    if requested.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(requested)!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or 'cpu' (or set SPECTRAL_LAB_DEVICE=cpu)"
        )
    if requested.type == "cuda" and requested.index is not None:
        if requested.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(requested)!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    if requested.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was requested but MPS is not available; use 'auto' or 'cpu'")
    return requested


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator.

    The returned generator is what data loaders should use for shuffling, so
    that the data order depends on ``seed`` alone and not on how many random
    numbers the model's initialisation happened to draw.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def thread_policy() -> int:
    """CPU threads for torch's kernels on the book's small models: ``SPECTRAL_LAB_THREADS``, else 1.

    The book's models have at most a few million parameters and run kernels of a
    few microseconds to milliseconds, where a second thread saves little; beside
    other work, the threads of one kernel wait for each other. Measured with
    ``benchmarks/thread_load.py`` on 2 cores (200 steps of the quick grokking run):
    one thread 4.5 s idle and 4.5 s beside a busy core (1.01x); both threads 3.6 s
    idle and 9.6 s beside it (2.67x). One thread per process is the policy; run
    several processes (``spectral_lab.sweep``'s ``processes`` engine) to use more cores. A
    GPU run is unaffected.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV}={value!r} must be a positive number of threads")
    return int(value)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the system says, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_thread_policy() -> int:
    """Apply :func:`thread_policy` to this process (``torch.set_num_threads``); returns the count.

    Every chapter calls it once in its set-up cell, and the command line calls it
    for CPU runs.
    """
    threads = thread_policy()
    torch.set_num_threads(threads)
    return threads


def install_hint(extra: str) -> str:
    """How to add an optional extra, as error messages say it.

    spectral-lab is installed from its repository, not from PyPI (a package of
    that name there would be someone else's), so the hint is the clone's install.
    """
    return f'pip install -e ".[{extra}]" (in a clone of the spectral-lab repository)'


def progress_bar(progress: bool | None, total: int, initial: int, desc: str) -> tqdm:
    """The progress bar of every training loop.

    ``progress=None`` shows it only on a terminal and never under CI (``CI`` set);
    ``True`` / ``False`` force it on or off.
    """
    if progress is None:  # quiet under CI and when stderr is not a terminal (tqdm's disable=None)
        disable = True if os.environ.get("CI") else None
    else:
        disable = not progress
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=disable,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def runs_dir() -> Path:
    """The repository's ``runs/`` folder, where paper-scale records are kept, seen from a chapter.

    Chapters execute in ``book/``; scripts and the command line in the repository root.
    """
    return Path("../runs") if Path.cwd().name == "book" else Path("runs")


def chapter_engine() -> str:
    """The sweep engine for a chapter's independent runs (:func:`spectral_lab.sweep`).

    ``"processes"`` where quick runs train on this machine's CPU cores: one run per core, each
    with the one thread of :func:`thread_policy` (:func:`process_workers`), so a run gives the
    numbers it gives in the chapter's own process, in about half the time on two cores.
    ``"serial"`` at paper scale, on a GPU (each run takes the whole device) and where the cores
    hold one run's threads only.
    """
    on_cpu = get_device("auto").type == "cpu"
    return "processes" if run_mode() == "quick" and on_cpu and process_workers() > 1 else "serial"


def process_workers() -> int:
    """How many runs this machine trains side by side: one per :func:`thread_policy`'s share of
    its cores (two threads per run on two cores: one run, as threads beside a busy core wait
    for each other; see :func:`thread_policy`)."""
    return max(1, cpu_cores() // thread_policy())


def run_mode() -> str:
    """Return ``"quick"`` or ``"full"``: the scale at which chapters run.

    Read from ``SPECTRAL_LAB_MODE``; ``"quick"`` when it is unset, on any machine.
    Paper scale takes hours even on a GPU, so a reader opts in explicitly
    (``SPECTRAL_LAB_MODE=full``); a GPU runtime alone never starts it.
    """
    value = os.environ.get(MODE_ENV, "").strip().lower()
    if not value:
        return "quick"
    if value not in RUN_MODES:
        raise ValueError(f"{MODE_ENV}={value!r} is not a run mode; set it to 'quick' or 'full'")
    return value
