"""What the process engines cost against the serial one, on the quick weight-decay sweep.

(Named sweep_engines.py, not distributed.py: a script called distributed.py would shadow Dask's
``distributed`` package, since Python puts the script's folder first on sys.path.)

Prints the wall time of ``sweep(configs, engine="serial")``, of
``sweep(configs, engine="processes", workers=N)`` (the standard library's process pool,
what the chapters use) and of ``engine="local"`` (the same on a Dask ``LocalCluster``, if
Dask is installed) on the same configs, and their ratios to serial. A pool's time includes
starting its processes and importing torch in each; with N workers on N free cores the
ratio is below 1 when the runs are long enough to pay for that, and measures pure overhead
with ``--workers 1``.

Run:  python benchmarks/sweep_engines.py [--workers 2] [--steps 1200]
(``--steps`` shortens every run of the sweep for a quick look.) Not a test: it prints
figures and always exits 0.
"""

from __future__ import annotations

import argparse
import time

import spectral_lab as sl
from spectral_lab.experiments.weight_decay import train_record


def seconds(configs, engine: str, workers: int | None) -> float:
    start = time.perf_counter()
    sl.sweep(configs, train_record, engine=engine, workers=workers, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=None, help="override the preset's steps (default 1200)"
    )
    args = parser.parse_args()
    sweep = sl.WeightDecaySweep.quick().with_overrides(device="cpu")
    if args.steps is not None:
        sweep = sweep.with_overrides(steps=args.steps, checkpoint_every=args.steps)
    configs = sweep.configs()
    train_record(
        configs[0].with_overrides(steps=1)
    )  # warm this process's lazy torch imports for a fair serial time
    print(f"quick weight-decay sweep: {len(configs)} runs x {sweep.steps} steps, {load()}")
    serial = seconds(configs, "serial", None)
    print(f"serial: {serial:.1f} s")
    for engine in ("processes", "local"):
        try:
            took = seconds(configs, engine, args.workers)
        except ImportError as err:  # the local engine needs the [dask] extra
            print(f"{engine}: skipped ({err})")
            continue
        print(
            f"{engine} ({args.workers} workers x 1 thread): {took:.1f} s, "
            f"ratio to serial {took / serial:.2f}"
        )
    print(load())


def load() -> str:
    return "load " + " ".join(open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
