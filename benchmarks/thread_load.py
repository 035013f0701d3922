"""Does a chapter's training survive a busy machine? The thread policy under a competing load.

Times the same small run (the quick grokking setting, shortened) with torch using one thread
(the package's policy, ``spectral_lab.runtime.thread_policy``) and with every core, each on an
idle machine and beside a competing process that keeps one core busy. Prints each median and the
slowdown under load (target for the policy: <= ~2x). Runs are interleaved, so a noisy machine
moves both sides of a ratio together; the load average is printed beside the figures.

Run:  python benchmarks/thread_load.py [--steps 300] [--repeats 3]
Not a test: it prints figures and always exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time


def busy(stop) -> None:
    """A competing load: one core spinning until told to stop."""
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def one_run(threads: int, steps: int) -> float:
    import torch

    from spectral_lab.experiments.grokking import GrokkingConfig, train

    torch.set_num_threads(threads)
    config = GrokkingConfig.quick().with_overrides(steps=steps, device="cpu")
    start = time.perf_counter()
    train(config, progress=False)
    return time.perf_counter() - start


def timed(threads: int, steps: int, loaded: bool) -> float:
    """One run in a fresh process (its own thread pools), beside a busy core if ``loaded``."""
    stop = mp.Event()
    spinner = mp.Process(target=busy, args=(stop,)) if loaded else None
    if spinner:
        spinner.start()
    try:
        with mp.Pool(1) as pool:
            return pool.apply(one_run, (threads, steps))
    finally:
        if spinner:
            stop.set()
            spinner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    settings = {"policy (1 thread)": 1, f"every core ({cores} threads)": cores}
    times = {(name, loaded): [] for name in settings for loaded in (False, True)}
    print(f"load average before: {os.getloadavg()[0]:.2f}; {cores} cores; {args.steps} steps")
    for _ in range(args.repeats):
        for name, threads in settings.items():
            for loaded in (False, True):
                times[(name, loaded)].append(timed(threads, args.steps, loaded))
    print(f"{'threads':<26}{'idle':>9}{'one core busy':>15}{'slowdown':>10}")
    for name in settings:
        idle = statistics.median(times[(name, False)])
        busy_ = statistics.median(times[(name, True)])
        print(f"{name:<26}{idle:>8.1f}s{busy_:>14.1f}s{busy_ / idle:>9.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
