"""The paper-scale check on one GPU, as one prepared script (issue 19).

    python tools/gpu_check.py [--out DIR] [--budget SECONDS] [--smoke]

A lent GPU comes with minutes, not hours, so everything it should do is one call. In order of
value, within ``--budget`` seconds of wall time (default 540, nine minutes):

1. the ``gpu``-marked tests (``pytest -m gpu``);
2. the paper-scale runs of :data:`spectral_lab.experiments.shipped.PAPER_SHIPMENTS`: the grokking
   chapter's three rows (p=113, 30 % data, 40k steps, wd 1; wd 0; 90 % data wd 0), then the
   weight-decay sweep's other values, skipping those ``records/`` already ships (``--again``
   trains them anyway): one lent GPU's minutes fit about two of these runs, so each session
   continues where the last one stopped. Each run is its own process, one at a time
   (:func:`paper_runs` says why). Every record is written in the
   shipped-records format (``OUT/records/`` with its manifest: scale, device, seed, config,
   versions, sha256), ready to be copied into ``records/``;
3. ``benchmarks/tracking.py`` on the same device, with the time that is left.

Before anything starts, each run's time is estimated (:func:`estimate`) from the floating-point
operations of one training step (counted by ``torch.utils.flop_counter``) and its kernel count
(torch's profiler, one launch per operator), with a step measured on the CPU for comparison;
a run whose estimate does not fit the time left is not started. A run still going at its
deadline is stopped (SIGTERM, then SIGKILL) and reported as unfinished; what finished is kept.
The summary (``OUT/summary.json`` and ``OUT/summary.md``): wall time of every job, steps to
99 % validation accuracy, record sizes, the benchmark's output.

``--smoke`` runs the same script on the CPU at a tiny scale (quick presets cut to 30 steps, the
benchmark's quick mode on two sections) in a minute or two; ``tests/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The GPU estimate (an H200): the fraction of its 67 TFLOP/s of float32 that these small matrix
#: products reach (an assumption), the cost of one kernel launch from Python and the cost of one
#: snapshot of the grokking model with its evaluations and pruned models. The last two were
#: measured on the H200 on 2026-11-30: a paper-scale step 3.0-3.4 ms for its 159 launches, 300
#: tracked steps 1.44 s (four snapshots); the grokking-full run then took 184.5 s, estimated 176.
GPU_FLOPS = 67e12 * 0.2
LAUNCH_SECONDS = 20e-6
SNAPSHOT_SECONDS = 0.12
SMOKE_STEPS = 30


def shipments(smoke: bool) -> dict:
    """The runs in order of value; at smoke scale the first three, cut to quick presets."""
    from spectral_lab.experiments import shipped

    chosen = dict(shipped.PAPER_SHIPMENTS)
    if smoke:
        quick = {"full": "quick", "full_no_wd": "quick_no_wd", "full_more_data": "quick_more_data"}
        chosen = {
            name: dataclasses.replace(
                shipment,
                preset=quick[shipment.preset],
                settings={**shipment.settings, "steps": SMOKE_STEPS},
            )
            for name, shipment in list(chosen.items())[:3]
        }
    return chosen


#: Operators that only change a tensor's metadata or allocate: no kernel runs on a GPU.
NO_KERNEL = {
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::view", "aten::_unsafe_view",
    "aten::reshape", "aten::as_strided", "aten::t", "aten::transpose", "aten::permute",
    "aten::expand", "aten::detach", "aten::alias", "aten::squeeze", "aten::unsqueeze",
    "aten::select", "aten::slice", "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh",
    "aten::_reshape_alias", "aten::contiguous", "aten::unbind", "aten::split", "aten::chunk",
}  # fmt: skip


def launches_kernel(event) -> bool:
    """A profiled operator that runs a kernel of its own: an ``aten::`` operator that calls no
    other (composite operators such as ``aten::linear`` launch through their children) and is
    not a metadata operation."""
    if not event.name.startswith("aten::") or event.name in NO_KERNEL:
        return False
    return not any(child.name.startswith("aten::") for child in event.cpu_children)


def estimate(shipment, device: str = "cpu") -> dict:
    """Seconds of one run on the GPU, estimated from one training step measured here: its
    floating-point operations (at :data:`GPU_FLOPS`) or its kernel launches (at
    :data:`LAUNCH_SECONDS` each), whichever is slower, times the steps, plus
    :data:`SNAPSHOT_SECONDS` per ``track_every`` steps."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    config = shipment.config(0).with_overrides(device=device)
    torch.manual_seed(0)
    model = config.make_model()
    data = config.make_data()
    optimizer = config.make_optimizer(model)

    def step():
        loss = F.cross_entropy(model(data.train_x), data.train_y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops() * 1.1  # AdamW's elementwise work, not counted
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    launches = sum(1 for event in profile.events() if launches_kernel(event))
    started = time.perf_counter()
    step()
    cpu_step = time.perf_counter() - started
    gpu_step = max(flops / GPU_FLOPS, launches * LAUNCH_SECONDS)
    snapshots = config.steps // config.track_every + 1
    seconds = config.steps * gpu_step + snapshots * SNAPSHOT_SECONDS
    return {
        "flops_per_step": flops,
        "launches_per_step": launches,
        "cpu_step_s": cpu_step,
        "gpu_step_s": gpu_step,
        "steps": config.steps,
        "estimated_s": seconds,
        "cpu_estimated_s": config.steps * cpu_step,
    }


def run_job(name: str, smoke: bool, records: Path) -> int:
    """One run in this process (``--job NAME``): train, write the record and its manifest entry."""
    from spectral_lab.experiments import shipped
    from spectral_lab.runtime import use_thread_policy

    use_thread_policy()
    shipment = shipments(smoke)[name]
    shipped.SHIPMENTS[name] = shipment  # the smoke variants are not in the package's list
    shipped.regenerate(name, [0], records=records, progress=True)
    return 0


class Clock:
    def __init__(self, budget: float):
        self.start = time.monotonic()
        self.budget = budget

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the training loops stop between steps), then SIGKILL after 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_command(command: list[str], timeout: float, log: Path, env: dict) -> dict:
    started = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        try:
            process.wait(max(timeout, 1))
            finished = True
        except subprocess.TimeoutExpired:
            stop(process)
            finished = False
    return {
        "command": " ".join(command),
        "returncode": process.returncode,
        # a command that ends with an error is not finished (the first GPU call's tests ended at
        # once on a missing import, and "finished" alone said yes)
        "finished": finished and process.returncode == 0,
        "wall_s": round(time.monotonic() - started, 1),
        "log": log.name,
    }


def paper_runs(
    smoke: bool, out: Path, clock: Clock, reserve: float, env: dict, again: bool = False
) -> list[dict]:
    """The runs in order of value, one after the other, each started only if its expected time
    fits before the deadline (``reserve`` seconds before the budget ends, kept for the
    benchmark); one still going at the deadline is stopped and kept as unfinished.

    One at a time: a step of these small models is a few hundred kernel launches, which leaves
    the GPU mostly idle, but the GPU time-slices between processes rather than overlapping them.
    Measured on the H200: grokking-full alone took 184.5 s; four runs side by side (the three
    grokking rows and one weight decay) had none finished after 320 s. Once a run has finished,
    its wall time replaces the estimate of the runs after it (they are the same model). A run
    whose record ``records/`` already ships is skipped unless ``again``."""
    from spectral_lab.experiments import shipped

    results, measured = [], []
    for name, shipment in shipments(smoke).items():
        if not smoke and not again and shipped.available(name):
            results.append({"job": name, "started": False, "why": "already in records/"})
            continue
        guess = estimate(shipment)
        expected = max(measured) if measured else guess["estimated_s"] * 1.2
        deadline = clock.left() - reserve
        if expected > deadline and not smoke:
            why = f"expected {expected:.0f} s > {deadline:.0f} s left"
            results.append({"job": name, "estimate": guess, "started": False, "why": why})
            continue
        print(f"starting {name}: expected {expected:.1f} s on the GPU "
              f"({guess['cpu_step_s']:.3f} s a step on this CPU)", flush=True)  # fmt: skip
        # the config's device "auto": the GPU there, the CPU in --smoke
        command = [sys.executable, str(Path(__file__).resolve()), "--job", name, "--out", str(out)]
        command += ["--smoke"] if smoke else []
        ran = run_command(command, deadline, out / f"{name}.log", env)
        results.append({"job": name, "estimate": guess, "started": True, **ran})
        if ran["finished"]:
            measured.append(ran["wall_s"])
    return results


def describe_records(records: Path) -> list[dict]:
    """Per record: steps to 99 % validation accuracy, final accuracies, size."""
    from spectral_lab import curves
    from spectral_lab.experiments import shipped
    from spectral_lab.record import RunRecord

    rows = []
    for file, entry in shipped.read_manifest(records)["records"].items():
        record = RunRecord.load(records / file)
        to_99 = curves.time_to_generalize(record, 0.99)
        rows.append({
            "record": file,
            "device": entry["device"],
            "train_seconds": entry["train_seconds"],
            "steps_to_99_val_acc": None if math.isnan(to_99) else int(to_99),
            "final_val_acc": float(record.scalars["val_acc"][-1]),
            "final_train_acc": float(record.scalars["train_acc"][-1]),
            "bytes": entry["bytes"],
        })  # fmt: skip
    return rows


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# GPU check ({summary['device']}, "
        f"{summary['wall_s']:.0f} s of {summary['budget_s']:.0f} s)",
        "",
    ]
    lines += ["| job | started | finished | return code | wall s | estimated s | why not |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for job in summary["jobs"]:
        guess = job.get("estimate", {}).get("estimated_s")
        lines.append(
            f"| {job['job']} | {job.get('started', True)} | {job.get('finished')} | "
            f"{job.get('returncode', '')} | {job.get('wall_s', '')} | "
            f"{'' if guess is None else f'{guess:.1f}'} | {job.get('why', '')} |"
        )
    lines += ["", "| record | device | train s | steps to 99 % val acc | final val acc | bytes |"]
    lines += ["|---|---|---|---|---|---|"]
    for row in summary["records"]:
        lines.append(
            f"| {row['record']} | {row['device']} | {row['train_seconds']} | "
            f"{row['steps_to_99_val_acc']} | {row['final_val_acc']:.3f} | {row['bytes']:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "_build" / "gpu_check"))
    parser.add_argument("--budget", type=float, default=540.0, help="seconds of wall time")
    parser.add_argument("--smoke", action="store_true", help="the CPU, tiny scale, a minute or two")
    parser.add_argument("--again", action="store_true", help="also runs records/ already ships")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one run, started by this script
    args = parser.parse_args(argv)
    out = Path(args.out)
    records = out / "records"
    if args.job:
        return run_job(args.job, args.smoke, records)
    clock = Clock(args.budget)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from spectral_lab.runtime import use_thread_policy

    use_thread_policy()  # the CPU step of the estimate is measured as a chapter would run it
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device here: run on the GPU machine, or --smoke on the CPU")
    # PYTHONPATH keeps what was there (wheels carried to the GPU machine are found through it)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "SPECTRAL_LAB_RECORDS": str(records)}
    env["PYTHONUNBUFFERED"] = "1"  # a log stopped at the deadline still says how far it got
    jobs = []
    # The GPU machine has its own Python packages, not the test extra: the project's addopts name
    # nbval's flag, and other test files import packages it may lack; the gpu tests need neither.
    tests = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
    tests += ["--strict-markers", "-m", "gpu", "-q", "-rs"]
    tests += ["tests/test_spectra.py", "tests/test_tracker.py", "tests/test_sweeps.py"]
    jobs.append(
        {"job": "gpu tests", **run_command(tests, min(90, clock.left()), out / "tests.log", env)}
    )
    reserve = 20 if args.smoke else 150  # seconds kept for the benchmark
    jobs += paper_runs(args.smoke, out, clock, reserve, env, args.again)
    bench = [sys.executable, str(ROOT / "benchmarks" / "tracking.py")]
    bench += ["--device", "cpu" if args.smoke else "cuda"]
    bench += ["--quick", "--skip", "a,c,d,e,f"] if args.smoke else ["--skip", "f"]
    jobs.append(
        {
            "job": "tracking benchmark",
            **run_command(bench, clock.left() - 5, out / "benchmark.log", env),
        }
    )
    summary = {
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and not args.smoke
        else "cpu",
        "smoke": args.smoke,
        "budget_s": args.budget,
        "wall_s": round(time.monotonic() - clock.start, 1),
        "jobs": jobs,
        "records": describe_records(records) if (records / "manifest.json").exists() else [],
        "benchmark": (out / "benchmark.log").read_text()[-6000:],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    print(summary_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
