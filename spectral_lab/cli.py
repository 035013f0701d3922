"""The command line: run an experiment at paper scale on a GPU and keep its record for the chapters.

    python -m spectral_lab run grokking --preset full --device cuda --out runs/grok-wd1.npz
    python -m spectral_lab run grokking --preset full --set weight_decay=0.1 --set steps=20000
    python -m spectral_lab run grokking --preset full --out runs/grok-wd1.npz --resume
    python -m spectral_lab run weight_decay --preset full --out runs/wd-sweep
    python -m spectral_lab list

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

from .experiments import EXPERIMENTS, coerce_value
from .runtime import get_device

__all__ = ["main", "parse_overrides"]

USAGE_ERROR = 2
INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


def parse_overrides(config_class: type, items: list[str]) -> dict[str, object]:
    """``["lr=3e-3", "steps=500"]`` -> ``{"lr": 0.003, "steps": 500}``, typed by ``config_class``'s fields."""
    types = typing.get_type_hints(config_class)
    names = [f.name for f in fields(config_class)]
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r} (for example --set lr=3e-3)")
        if key not in names:
            raise UsageError(f"unknown setting {key!r} for {config_class.__name__}; settings: {', '.join(names)}")
        try:
            overrides[key] = coerce_value(key, types[key], value)
        except ValueError as err:
            raise UsageError(f"--set {item}: {err}") from None
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spectral_lab",
                                     description="Run the book's experiments and write run records.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,list}")
    run = commands.add_parser("run", help="train an experiment and write its record")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS), help="which experiment")
    run.add_argument("--preset", default="quick", help="a named setting, e.g. quick or full (see: list)")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    run.add_argument("--out", help="where to write (default: runs/EXPERIMENT-PRESET)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="change one setting of the preset; repeatable")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace an existing record instead of failing")
    commands.add_parser("list", help="list the experiments, their presets and settings")
    return parser


def _list() -> int:
    for name, experiment in EXPERIMENTS.items():
        cls = experiment.config_class
        print(f"{name}: {cls.__name__}")
        print(f"  presets:  {', '.join(cls.presets())}")
        print(f"  settings: {', '.join(f.name for f in fields(cls))}")
        print(f"  --out:    {experiment.out_help}")
    return 0


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    experiment = EXPERIMENTS[args.experiment]
    cls = experiment.config_class
    presets = cls.presets()
    if args.preset not in presets:
        raise UsageError(f"unknown preset {args.preset!r} for {args.experiment}; presets: {', '.join(presets)}")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: choose one")
    overrides = parse_overrides(cls, args.overrides)
    if "device" in overrides and args.device != "auto":
        raise UsageError("give the device once: either --device or --set device=..., not both")
    overrides.setdefault("device", args.device)
    try:
        get_device(overrides["device"])
        config = presets[args.preset]().with_overrides(**overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out) if args.out else Path("runs") / f"{args.experiment}-{args.preset}{experiment.suffix}"
    existing = [str(p) for p in experiment.outputs(config, out) if p.exists()]
    if args.resume and not existing:
        raise UsageError(f"--resume: nothing to resume at {out}; run without --resume to start the run")
    if existing and not (args.resume or args.overwrite):
        raise UsageError(f"{existing[0]} already exists: add --resume to continue that run, --overwrite to "
                         "replace it, or choose another --out")
    print(f"{args.experiment} ({args.preset}) on {get_device(config.device)} -> {out}", file=sys.stderr)
    try:
        result = experiment.run(config, out, resume=args.resume)
    except KeyboardInterrupt:
        command = shlex.join(["python", "-m", "spectral_lab", *(a for a in argv if a != "--overwrite")])
        hint = command if "--resume" in argv else f"{command} --resume"
        print(f"\ninterrupted; the last checkpoint is kept. Continue with: {hint}", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    records = result if isinstance(result, list) else [result]
    for record in records:
        name = "val_acc" if "val_acc" in record.scalars else "test_acc"
        acc = record.scalars.get(name)
        tail = f", final {name.replace('_', ' ')} {acc[-1]:.3f}" if acc is not None and len(acc) else ""
        print(f"{record!r}{tail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spectral_lab``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        return _run(args, argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
