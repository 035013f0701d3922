"""The command line: run an experiment at paper scale on a GPU and keep its record for the chapters.

    python -m spectral_lab run grokking --preset full --device cuda --out runs/grok-wd1.npz
    python -m spectral_lab run grokking --preset full --set weight_decay=0.1 --set steps=20000
    python -m spectral_lab run grokking --preset full --out runs/grok-wd1.npz --resume
    python -m spectral_lab run weight_decay --preset full --out runs/wd-sweep
    python -m spectral_lab sweep weight_decay --preset full --engine local --gpus 4 --out runs/wd
    python -m spectral_lab sweep connectivity --preset full --engine dask --address tcp://host:8786
    --out runs/lmc
    python -m spectral_lab list
    python -m spectral_lab analyze runs/ckpts --out runs/ckpts.npz   (records from checkpoints)

``sweep`` runs an experiment made of independent runs through
:func:`spectral_lab.sweep`: on this process (``serial``), on local worker
processes (``local``), on a Dask cluster (``dask --address``) or on Ray
(``ray``). It always keeps what is already in ``--out`` and runs the rest, so
running the same command again resumes an interrupted sweep.

Experiments come from :data:`spectral_lab.experiments.EXPERIMENTS`. Mistakes in
the input (an unknown experiment, preset or field, a bad value, nothing to
resume) print one line saying what is wrong and how to fix it, and exit with
status 2; an interrupted run says how to resume it and exits with 130.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import typing
from dataclasses import fields
from pathlib import Path

from .config import coerce_value
from .experiments import EXPERIMENTS
from .record import RunRecord
from .runtime import get_device, use_thread_policy
from .sweeps import ENGINES, SweepError

__all__ = ["main", "parse_overrides"]

USAGE_ERROR = 2
INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


def parse_overrides(config_class: type, items: list[str]) -> dict[str, object]:
    """``["lr=3e-3", "steps=500"]`` -> ``{"lr": 0.003, "steps": 500}``, typed by ``config_class``'s
    fields."""
    types = typing.get_type_hints(config_class)
    names = [f.name for f in fields(config_class)]
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r} (for example --set lr=3e-3)")
        if key not in names:
            raise UsageError(
                f"unknown setting {key!r} for {config_class.__name__}; settings: {', '.join(names)}"
            )
        try:
            overrides[key] = coerce_value(key, types[key], value)
        except ValueError as err:
            raise UsageError(f"--set {item}: {err}") from None
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spectral_lab",
        description="Run the book's experiments and write run records.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{run,sweep,list,analyze}"
    )
    run = commands.add_parser("run", help="train an experiment and write its record")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS), help="which experiment")
    _add_settings(run)
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace an existing record instead of failing"
    )
    sweep = commands.add_parser(
        "sweep", help="run the independent runs of an experiment on an engine"
    )
    sweep.add_argument("experiment", help="which experiment: " + ", ".join(_sweepable()))
    _add_settings(sweep)
    sweep.add_argument(
        "--engine",
        default="serial",
        choices=ENGINES,
        help="serial (default), local (worker processes here), dask (--address) or ray",
    )
    sweep.add_argument(
        "--address",
        help="the Dask scheduler (tcp://host:8786) or Ray cluster (auto, ray://host:10001)",
    )
    sweep.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    sweep.add_argument("--gpus", type=int, help="local: one worker per GPU; ray: one GPU per run")
    sweep.add_argument(
        "--retries",
        type=int,
        default=2,
        help="resubmissions of a run whose worker died (default 2)",
    )
    commands.add_parser("list", help="list the experiments, their presets and settings")
    _add_analyze(commands)
    return parser


def _add_settings(command: argparse.ArgumentParser) -> None:
    """What ``run`` and ``sweep`` share: the preset, its overrides, the device and where to
    write."""
    command.add_argument(
        "--preset", default="quick", help="a named setting, e.g. quick or full (see: list)"
    )
    command.add_argument(
        "--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps"
    )
    command.add_argument("--out", help="where to write (default: runs/EXPERIMENT-PRESET)")
    command.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting of the preset; repeatable",
    )


def _sweepable() -> list[str]:
    return sorted(name for name, experiment in EXPERIMENTS.items() if experiment.sweep is not None)


def _list() -> int:
    for name, experiment in EXPERIMENTS.items():
        cls = experiment.config_class
        print(f"{name}: {cls.__name__}")
        print(f"  presets:  {', '.join(cls.presets())}")
        print(f"  settings: {', '.join(f.name for f in fields(cls))}")
        print(f"  --out:    {experiment.out_help}")
    return 0


def _config(args: argparse.Namespace):
    """The experiment's preset with the command line's overrides and device, checked."""
    cls = EXPERIMENTS[args.experiment].config_class
    presets = cls.presets()
    if args.preset not in presets:
        raise UsageError(
            f"unknown preset {args.preset!r} for {args.experiment}; presets: {', '.join(presets)}"
        )
    overrides = parse_overrides(cls, args.overrides)
    if "device" in overrides and args.device != "auto":
        raise UsageError("give the device once: either --device or --set device=..., not both")
    overrides.setdefault("device", args.device)
    try:
        device = get_device(overrides["device"])
        config = presets[args.preset]().with_overrides(**overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if device.type == "cpu":
        use_thread_policy()  # small models on a CPU: see spectral_lab.runtime.thread_policy
    return config


def _default_out(args: argparse.Namespace) -> Path:
    suffix = EXPERIMENTS[args.experiment].suffix
    return Path(args.out) if args.out else Path("runs") / f"{args.experiment}-{args.preset}{suffix}"


def _report(result) -> None:
    for item in result if isinstance(result, list) else [result]:
        if not isinstance(item, RunRecord):
            print(item.report() if hasattr(item, "report") else repr(item))
            continue
        name = "val_acc" if "val_acc" in item.scalars else "test_acc"
        acc = item.scalars.get(name)
        tail = (
            f", final {name.replace('_', ' ')} {acc[-1]:.3f}"
            if acc is not None and len(acc)
            else ""
        )
        print(f"{item!r}{tail}")


def _sweep(args: argparse.Namespace) -> int:
    if args.experiment not in EXPERIMENTS or EXPERIMENTS[args.experiment].sweep is None:
        known = (
            f"{args.experiment} is one run: use `run {args.experiment}`"
            if args.experiment in EXPERIMENTS
            else f"unknown experiment {args.experiment!r}"
        )
        raise UsageError(f"{known}; experiments that sweep: {', '.join(_sweepable())}")
    if args.engine == "dask" and not args.address:
        raise UsageError("--engine dask needs --address (the scheduler, e.g. tcp://host:8786)")
    if args.address and args.engine not in ("dask", "ray"):
        raise UsageError(f"--address is for --engine dask or ray, not {args.engine}")
    config = _config(args)
    out = _default_out(args)
    engine = dict(engine=args.engine, retries=args.retries)
    engine.update(
        {
            k: v
            for k, v in dict(address=args.address, workers=args.workers, gpus=args.gpus).items()
            if v is not None
        }
    )
    print(f"{args.experiment} ({args.preset}) sweep on {args.engine} -> {out}", file=sys.stderr)
    try:
        result = EXPERIMENTS[args.experiment].sweep(config, out, **engine)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished runs are kept in {out}. Run the same command again to "
            "continue.",
            file=sys.stderr,
        )
        return INTERRUPTED
    except SweepError as err:
        print(
            f"error: {err}\nthe other runs are kept in {out}; fix the failing configs and run the "
            "command again",
            file=sys.stderr,
        )
        return 1
    except (ValueError, ImportError) as err:
        raise UsageError(str(err)) from None
    _report(result)
    return 0


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    experiment = EXPERIMENTS[args.experiment]
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: choose one")
    config = _config(args)
    out = _default_out(args)
    existing = [str(p) for p in experiment.outputs(config, out) if p.exists()]
    if args.resume and not existing:
        raise UsageError(
            f"--resume: nothing to resume at {out}; run without --resume to start the run"
        )
    if existing and not (args.resume or args.overwrite):
        raise UsageError(
            f"{existing[0]} already exists: add --resume to continue that run, --overwrite to "
            "replace it, or choose another --out"
        )
    print(
        f"{args.experiment} ({args.preset}) on {get_device(config.device)} -> {out}",
        file=sys.stderr,
    )
    try:
        result = experiment.run(config, out, resume=args.resume)
    except KeyboardInterrupt:
        command = shlex.join(
            ["python", "-m", "spectral_lab", *(a for a in argv if a != "--overwrite")]
        )
        hint = command if "--resume" in argv else f"{command} --resume"
        print(f"\ninterrupted; the last checkpoint is kept. Continue with: {hint}", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    _report(result)
    return 0


def _add_analyze(commands) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="a record from checkpoints (a folder or glob) or a save_pretrained folder",
        description="Turn checkpoints into a run record without re-training "
        "(spectral_lab.checkpoints.analyze). Rerunning with the same --out resumes.",
    )
    analyze.add_argument("source", help="a folder, a glob in quotes, or one checkpoint")
    analyze.add_argument("--out", required=True, help="the record to write (resumed if it exists)")
    analyze.add_argument(
        "--model", help="MODULE:FACTORY building the network the checkpoints came from"
    )
    analyze.add_argument("--layers", help="a glob of layer names to track (default: all)")
    analyze.add_argument("--top-k", type=int, default=10, help="singular vectors kept (10)")
    analyze.add_argument("--no-pairs", action="store_true", help="track no layer alignments")
    analyze.add_argument("--device", default="cpu", help="where the SVDs run (default cpu)")
    analyze.add_argument(
        "--skip-bad", action="store_true", help="report unreadable checkpoints and go on"
    )
    analyze.add_argument(
        "--unsafe-load-pickles",
        action="store_true",
        help="also load whole pickled models: this EXECUTES CODE from the files; only for "
        "files you trust",
    )


def _analyze(args: argparse.Namespace) -> int:
    import importlib

    from .checkpoints import CheckpointError, analyze

    model = None
    if args.model:
        module_name, sep, factory = args.model.partition(":")
        if not sep or not factory:
            raise UsageError(f"--model expects MODULE:FACTORY (mypkg.nets:build), got {args.model}")
        try:
            model = getattr(importlib.import_module(module_name), factory)
        except (ImportError, AttributeError) as err:
            raise UsageError(f"--model {args.model}: {err}") from None
    try:
        record = analyze(
            args.source,
            model=model,
            out=args.out,
            layers=args.layers,
            pairs=None if args.no_pairs else "infer",
            top_k=args.top_k,
            skip_bad=args.skip_bad,
            unsafe_allow_pickle=args.unsafe_load_pickles,
            device=args.device,
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise UsageError(str(err)) from None
    print(f"{record!r} -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spectral_lab``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "analyze":
            return _analyze(args)
        return _run(args, argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
