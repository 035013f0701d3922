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
the input (an unknown experiment, preset or field, a bad value, an output path
that cannot be written, nothing to resume) print one line saying what is wrong
and how to fix it, and exit with status 2. Names are checked against
:data:`CATALOGUE`, a copy of the registry's names that needs no torch, before
anything heavy is imported. A failed write or an unreachable cluster prints one
line and exits with 1. Ctrl-C (SIGINT) and SIGTERM stop a run alike: it says
what was kept (the checkpoint's step, or that the first checkpoint was still
to come) and the exact command to continue, and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, NamedTuple

__all__ = ["main", "parse_overrides", "CATALOGUE", "ENGINES"]

USAGE_ERROR = 2
FAILED = 1
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
TERMINATED = 143  # 128 + SIGTERM

#: ``sweep --engine``: the engines of :func:`spectral_lab.sweep` (a test keeps the two equal).
ENGINES = ("serial", "processes", "local", "dask", "ray")

#: How long a Dask client tries to reach ``--address`` before giving up (Dask's default is 30 s).
DASK_CONNECT_TIMEOUT = "5s"


class Known(NamedTuple):
    """What the command line checks before importing torch: one experiment's names."""

    config_class: str
    presets: tuple[str, ...]
    settings: tuple[str, ...]  # the config's fields, in order
    suffix: str  # appended to the default --out: ".npz" for one record, "" for a folder
    sweeps: bool  # has a ``sweep`` entry


_OBSERVED = ("eval_every", "track_every")
_MODULAR = (
    *("preset", "model", "p", "train_fraction", "d_model", "n_heads", "d_mlp", "lr"),
    *("beta1", "beta2", "steps", *_OBSERVED, "checkpoint_every", "top_k", "prune_fraction"),
    *("track_pruning", "seed", "device"),
)
_CLASSIFIER = (
    *("preset", "dataset", "label_noise", "label_seed", "model", "hidden", "channels", "lr"),
    *("momentum", "weight_decay", "schedule", "batch_size", "epochs", "seed", "data_seed"),
    *(*_OBSERVED, "top_k", "device"),
)
_ARCHITECTURE = (
    *("preset", "width", "optimizer", "lr", "momentum", "weight_decay", "warmup", "clip"),
    *("batch_size", "steps", "seed", "data_seed", *_OBSERVED, "checkpoint_every", "top_k"),
    "device",
)
_QUICK_FULL = ("quick", "full")

#: Experiment name -> its names, a torch-free copy of :data:`spectral_lab.experiments.EXPERIMENTS`
#: (tests/test_cli.py checks it against the registry): usage errors answer in a fraction of a
#: second instead of after importing torch.
CATALOGUE: dict[str, Known] = {
    "grokking": Known(
        "GrokkingConfig",
        tuple(f"{scale}{row}" for scale in _QUICK_FULL for row in ("", "_no_wd", "_more_data")),
        (*_MODULAR, "weight_decay"),
        ".npz",
        False,
    ),
    "weight_decay": Known("WeightDecaySweep", _QUICK_FULL, (*_MODULAR, "weight_decays"), "", True),
    "memorization": Known(
        "MemorizationConfig", _QUICK_FULL, (*_CLASSIFIER, "label_fractions"), "", False
    ),
    "connectivity": Known(
        "ConnectivityConfig",
        _QUICK_FULL,
        (
            *_CLASSIFIER,
            *("trunk_seeds", "split_steps", "branch_seeds", "other_seeds", "etas"),
            *("perturb_step", "alphas"),
        ),
        "",
        True,
    ),
    "arch_convnet": Known("ConvNetConfig", _QUICK_FULL, _ARCHITECTURE, ".npz", False),
    "arch_lstm": Known("LSTMConfig", _QUICK_FULL, (*_ARCHITECTURE, "layers"), ".npz", False),
    "arch_transformer": Known(
        "TransformerConfig",
        _QUICK_FULL,
        (*_ARCHITECTURE, "n_heads", "n_layers", "context", "n_sentences", "corpus_seed"),
        ".npz",
        False,
    ),
    "arch_unet": Known(
        "UNetConfig",
        _QUICK_FULL,
        (*_ARCHITECTURE, "diffusion_steps", "beta_end", "eval_levels", "eval_seed"),
        ".npz",
        False,
    ),
}


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while a command runs, so that it stops as Ctrl-C does:
    files are left whole and the command says what was kept."""


class _Stop:
    """The handler of SIGINT and SIGTERM while a command runs: raises ``KeyboardInterrupt`` (or
    :class:`Terminated`) in the main thread, and again every ``retry_after`` seconds until the
    command reports the stop (:meth:`seen`). One raise is not enough: code a run calls may swallow
    it (a bare ``except``, or C code that clears Python errors). CI saw this once: a run sent
    SIGTERM just after it started trained to the end and exited 0."""

    def __init__(self, retry_after: float):
        self.retry_after = retry_after
        self.pending: int | None = None  # the signal raised and not yet reported
        self.timer: threading.Timer | None = None

    def __call__(self, signum, frame):
        if self.pending is None:
            self.pending = signum
            self._arm()
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def _arm(self) -> None:
        self.timer = threading.Timer(self.retry_after, self._again)
        self.timer.daemon = True
        self.timer.start()

    def _again(self) -> None:  # on the timer's thread: the main thread gets the signal again
        signum = self.pending
        if signum is not None:
            import _thread

            _thread.interrupt_main(signum)
            self._arm()

    def seen(self) -> None:
        self.pending = None
        if self.timer is not None:
            self.timer.cancel()


_stop: _Stop | None = None  # the handler while a command runs in the main thread


def _stop_seen() -> None:
    """Called first where a command catches the stop, so that it is not raised again while the
    command says what was kept."""
    if _stop is not None:
        _stop.seen()


@contextlib.contextmanager
def _stops_interrupt(retry_after: float = 1.0):
    """While the block runs, SIGTERM stops the command as Ctrl-C does, both through :class:`_Stop`.
    Only in the main thread (elsewhere a handler cannot be installed, and the defaults stay), and
    SIGINT only where Python's own handler is in place (an ignored SIGINT stays ignored)."""
    global _stop
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    _stop = _Stop(retry_after)
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signals.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, _stop) for signum in signals}
    try:
        yield
    finally:
        _stop.seen()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop = None


def _registry() -> dict:
    from .experiments import EXPERIMENTS  # torch: only once the names are known to be right

    return EXPERIMENTS


def __getattr__(name: str):
    """``cli.EXPERIMENTS`` is the registry, imported on first use (it imports torch)."""
    if name == "EXPERIMENTS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_overrides(config_class: type, items: list[str]) -> dict[str, object]:
    """``["lr=3e-3", "steps=500"]`` -> ``{"lr": 0.003, "steps": 500}``, typed by ``config_class``'s
    fields."""
    import typing
    from dataclasses import fields

    from .config import coerce_value

    types = typing.get_type_hints(config_class)
    names = [f.name for f in fields(config_class)]
    overrides = {}
    for item in items:
        key, value = _split_setting(item, names, config_class.__name__)
        try:
            overrides[key] = coerce_value(key, types[key], value)
        except ValueError as err:
            raise UsageError(f"--set {item}: {err}") from None
    return overrides


def _split_setting(item: str, names, owner: str) -> tuple[str, str]:
    """``"lr=3e-3"`` -> ``("lr", "3e-3")``, the key checked against ``names`` (no torch)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set expects key=value, got {item!r} (for example --set lr=3e-3)")
    if key == "preset":
        raise UsageError(
            f"--set {item}: a preset is a set of values, not one setting: use --preset "
            f"{value.strip() or 'NAME'} (and --set to change settings of it)"
        )
    if key not in names:
        raise UsageError(f"unknown setting {key!r} for {owner}; settings: {', '.join(names)}")
    return key, value


def _check_names(args: argparse.Namespace) -> Known:
    """The experiment, preset and --set keys, checked against :data:`CATALOGUE` (no torch)."""
    known = CATALOGUE[args.experiment]
    if args.preset not in known.presets:
        raise UsageError(
            f"unknown preset {args.preset!r} for {args.experiment}; presets: "
            f"{', '.join(known.presets)}"
        )
    for item in args.overrides:
        _split_setting(item, known.settings, known.config_class)
    return known


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spectral_lab",
        description="Run the book's experiments and write run records.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{run,sweep,list,analyze,records}"
    )
    run = commands.add_parser("run", help="train an experiment and write its record")
    run.add_argument("experiment", choices=sorted(CATALOGUE), help="which experiment")
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
        help="serial (default), processes (worker processes here), local (the same with Dask), "
        "dask (--address) or ray",
    )
    sweep.add_argument(
        "--address",
        help="the Dask scheduler (tcp://host:8786) or Ray cluster (auto, ray://host:10001)",
    )
    sweep.add_argument(
        "--workers", type=int, help="processes or local: worker processes (default: one per core)"
    )
    sweep.add_argument("--gpus", type=int, help="local: one worker per GPU; ray: one GPU per run")
    sweep.add_argument(
        "--retries",
        type=int,
        default=2,
        help="resubmissions of a run whose worker died (default 2)",
    )
    commands.add_parser("list", help="list the experiments, their presets and settings")
    _add_analyze(commands)
    _add_records(commands)
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
    return sorted(name for name, known in CATALOGUE.items() if known.sweeps)


def _list() -> int:
    from dataclasses import fields

    for name, experiment in _registry().items():
        cls = experiment.config_class
        print(f"{name}: {cls.__name__}")
        print(f"  presets:  {', '.join(cls.presets())}")
        print(f"  settings: {', '.join(f.name for f in fields(cls))}")
        print(f"  --out:    {experiment.out_help}")
    return 0


def _config(args: argparse.Namespace):
    """The experiment's preset with the command line's overrides and device, checked."""
    from .runtime import get_device, use_thread_policy

    cls = _registry()[args.experiment].config_class
    overrides = parse_overrides(cls, args.overrides)
    if "device" in overrides and args.device != "auto":
        raise UsageError("give the device once: either --device or --set device=..., not both")
    overrides.setdefault("device", args.device)
    try:
        device = get_device(overrides["device"])
        config = cls.from_preset(args.preset).with_overrides(**overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if device.type == "cpu":
        use_thread_policy()  # small models on a CPU: see spectral_lab.runtime.thread_policy
    return config


def _default_out(args: argparse.Namespace) -> Path:
    suffix = CATALOGUE[args.experiment].suffix
    return Path(args.out) if args.out else Path("runs") / f"{args.experiment}-{args.preset}{suffix}"


@contextlib.contextmanager
def _claimed_out(args: argparse.Namespace) -> Iterator[Path]:
    """The one place where ``run`` and ``sweep`` take their ``--out``: checked before anything
    trains, and held until the command ends under an exclusive lock (:mod:`spectral_lab.locks`),
    so a second process on the same output fails at once, naming the first."""
    from .locks import output_lock

    out = _default_out(args)
    _check_out(args, out)
    with output_lock(out, folder=CATALOGUE[args.experiment].suffix == ""):
        yield out


def _check_out(args: argparse.Namespace, out: Path) -> None:
    """Before any training: ``out`` is a file path when the experiment writes one file (a folder
    when it writes many), and the folder it goes in can be created and written."""
    text = args.out or str(out)
    one_file = CATALOGUE[args.experiment].suffix != ""
    if one_file and (text.endswith(("/", os.sep)) or out.is_dir()):
        raise UsageError(
            f"--out {text} is a folder, but {args.experiment} writes one record file: name the "
            f"file, e.g. --out {out / f'{args.experiment}-{args.preset}.npz'}"
        )
    if not one_file and out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {text} is a file, but {args.experiment} writes a folder of runs: choose a "
            "folder path"
        )
    folder = out.parent if one_file else out
    # the folder itself, or the nearest folder above it that exists: where the first file goes
    nearest = next((p for p in (folder, *folder.parents) if p.exists()), Path.cwd())
    if not nearest.is_dir():
        raise UsageError(
            f"cannot write to --out {text}: {nearest} is a file, not a folder; choose another --out"
        )
    try:
        with tempfile.TemporaryFile(dir=nearest):  # can files be made there? (root ignores modes)
            pass
    except OSError as err:
        raise UsageError(
            f"cannot write to --out {text}: {err.strerror or err} ({nearest}); choose another --out"
        ) from None


def _report(result) -> None:
    from .record import RunRecord

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


def _check_gpus(gpus: int | None) -> None:
    """``--gpus N`` asks for N CUDA devices: refuse it where torch sees fewer."""
    if gpus is None:
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise UsageError(
            f"--gpus {gpus}: torch sees no CUDA GPU on this machine; drop --gpus to run on the "
            "CPU, or run where CUDA is"
        )
    if gpus > available:
        raise UsageError(f"--gpus {gpus}: torch sees only {available} CUDA GPU(s) here")


def _short_connect_timeout(engine: str):
    """A Dask client gives up on an unreachable scheduler after DASK_CONNECT_TIMEOUT, not 30 s."""
    if engine != "dask":
        return contextlib.nullcontext()
    try:
        import dask
    except ImportError:  # sweep() says what to install
        return contextlib.nullcontext()
    return dask.config.set({"distributed.comm.timeouts.connect": DASK_CONNECT_TIMEOUT})


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _sweep(args: argparse.Namespace, argv: list[str]) -> int:
    if args.experiment not in CATALOGUE or not CATALOGUE[args.experiment].sweeps:
        known = (
            f"{args.experiment} is one run: use `run {args.experiment}`"
            if args.experiment in CATALOGUE
            else f"unknown experiment {args.experiment!r}"
        )
        raise UsageError(f"{known}; experiments that sweep: {', '.join(_sweepable())}")
    if args.engine == "dask" and not args.address:
        raise UsageError("--engine dask needs --address (the scheduler, e.g. tcp://host:8786)")
    if args.address and args.engine not in ("dask", "ray"):
        raise UsageError(f"--address is for --engine dask or ray, not {args.engine}")
    _check_names(args)
    with _claimed_out(args) as out:
        return _sweep_into(out, args, argv)


def _sweep_into(out: Path, args: argparse.Namespace, argv: list[str]) -> int:
    from .sweeps import SweepError

    config = _config(args)
    _check_gpus(args.gpus)
    engine = dict(engine=args.engine, retries=args.retries)
    engine.update(
        {
            k: v
            for k, v in dict(address=args.address, workers=args.workers, gpus=args.gpus).items()
            if v is not None
        }
    )
    again = _command(argv)
    try:
        print(f"{args.experiment} ({args.preset}) sweep on {args.engine} -> {out}", file=sys.stderr)
        with _short_connect_timeout(args.engine):
            result = _registry()[args.experiment].sweep(config, out, **engine)
    except KeyboardInterrupt as stop:
        _stop_seen()
        print(
            f"\n{_stopped_by(stop)}; finished runs are kept in {out}. Continue with: {again}",
            file=sys.stderr,
        )
        return _interrupted_status(stop)
    except SweepError as err:
        print(
            f"error: {err}\nthe other runs are kept in {out}; fix the failing configs and run the "
            "command again",
            file=sys.stderr,
        )
        return FAILED
    except (ValueError, ImportError) as err:
        raise UsageError(str(err)) from None
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.errno is not None:  # a write, not a connection
            print(f"error: {_write_failure(err, out)}; continue with: {again}", file=sys.stderr)
            return FAILED
        if args.engine not in ("dask", "ray") or (
            isinstance(err, RuntimeError) and args.engine != "ray"
        ):
            raise
        what = "Dask scheduler" if args.engine == "dask" else "Ray cluster"
        print(
            f"error: cannot reach the {what} at {args.address or 'auto'}: {_first_line(err)}; "
            "check that it is running and that the address is right",
            file=sys.stderr,
        )
        return FAILED
    _report(result)
    return 0


def _command(argv: list[str], resume: bool = False, overwrite: bool = True) -> str:
    """The command line that ran, as a shell would take it, with or without ``--resume`` and
    ``--overwrite``."""
    kept = [a for a in argv if not (a == "--overwrite" and not overwrite)]
    if resume and "--resume" not in kept:
        kept.append("--resume")
    return shlex.join(["python", "-m", "spectral_lab", *kept])


def _stopped_by(stop: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def _interrupted_status(stop: KeyboardInterrupt) -> int:
    return TERMINATED if isinstance(stop, Terminated) else INTERRUPTED


def _write_failure(err: OSError, out: Path) -> str:
    return f"could not write {err.filename or out}: {err.strerror or _first_line(err)}"


def _checkpoint_step(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # unreadable: the resume will say why
        return None


def _mtimes(paths) -> dict[Path, int | None]:
    return {p: p.stat().st_mtime_ns if p.exists() else None for p in paths}


def _what_was_kept(config, out: Path, outputs, before: dict, args, argv: list[str]) -> str:
    """What an interrupted run leaves, and the command that continues it."""
    written = [p for p, mtime in _mtimes(outputs).items() if mtime is not None]
    changed = [p for p in written if before.get(p) != _mtimes([p])[p]]
    checkpoints = [p for p in outputs if p.name.endswith(".ckpt.pt")]
    ours = changed or (written if args.resume else [])
    if len(checkpoints) == 1 and len(outputs) == 2:  # one run: a record and its checkpoint
        ckpt = checkpoints[0]
        if ckpt in ours:
            step = _checkpoint_step(ckpt)
            at = f"step {step} of {config.steps}" if step is not None else "its last step"
            return (
                f"kept: the record and checkpoint at {at} ({ckpt}). Continue with: "
                f"{_command(argv, resume=True, overwrite=False)}"
            )
        first = min(config.checkpoint_every, config.steps)
        older = f"; the earlier run's files at {out} are as they were" if written else ""
        return (
            f"nothing kept yet: the first checkpoint comes at step {first}{older}. Start again "
            f"with: {_command(argv)}"
        )
    if ours:
        return (
            f"kept: the runs saved so far in {out}. Continue with: "
            f"{_command(argv, resume=True, overwrite=False)}"
        )
    return f"nothing kept yet. Start again with: {_command(argv)}"


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: choose one")
    _check_names(args)
    with _claimed_out(args) as out:
        return _run_into(out, args, argv)


def _run_into(out: Path, args: argparse.Namespace, argv: list[str]) -> int:
    experiment = _registry()[args.experiment]
    config = _config(args)
    outputs = experiment.outputs(config, out)
    existing = [str(p) for p in outputs if p.exists()]
    if args.resume and not existing:
        raise UsageError(
            f"--resume: nothing to resume at {out}; run without --resume to start the run"
        )
    if existing and not (args.resume or args.overwrite):
        raise UsageError(
            f"{existing[0]} already exists: add --resume to continue that run, --overwrite to "
            "replace it, or choose another --out"
        )
    from .runtime import get_device

    before = _mtimes(outputs)
    try:  # an interrupt once the start line is out gets the full story
        print(
            f"{args.experiment} ({args.preset}) on {get_device(config.device)} -> {out}",
            file=sys.stderr,
        )
        result = experiment.run(config, out, resume=args.resume)
    except KeyboardInterrupt as stop:
        _stop_seen()
        kept = _what_was_kept(config, out, outputs, before, args, argv)
        print(f"\n{_stopped_by(stop)}; {kept}", file=sys.stderr)
        return _interrupted_status(stop)
    except OSError as err:
        if err.errno is None:  # nothing to resume: a usage error, raised with a message
            raise UsageError(str(err)) from None
        kept = _what_was_kept(config, out, outputs, before, args, argv)
        print(f"error: {_write_failure(err, out)}; {kept}", file=sys.stderr)
        return FAILED
    except ValueError as err:
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


def _add_records(commands) -> None:
    records = commands.add_parser(
        "records",
        help="the run records shipped with the book: list, check or regenerate them",
        description="The other seeds the chapters show (spectral_lab.experiments.shipped): "
        "`list` them, `check` each against its manifest entry and the code (first steps trained "
        "again), or `regenerate` them.",
    )
    records.add_argument("action", choices=("list", "check", "regenerate"))
    records.add_argument("names", nargs="*", help="shipments (default: all)")
    records.add_argument("--seeds", help="a range or list, e.g. 1-4 or 1,3 (default: all)")


def _seed_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    seeds = []
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            seeds.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise UsageError(f"--seeds expects a range or list such as 1-4 or 1,3; got {text!r}")
    return seeds


def _records(args: argparse.Namespace) -> int:
    from .experiments import shipped
    from .runtime import use_thread_policy

    use_thread_policy()  # the chapters' policy, so a record is the run a chapter would train

    names = args.names or list(shipped.SHIPMENTS)
    unknown = [n for n in names if n not in shipped.SHIPMENTS]
    if unknown:
        raise UsageError(f"no shipment {unknown}; the book ships {', '.join(shipped.SHIPMENTS)}")
    seeds = _seed_list(args.seeds)
    failed = 0
    for name in names:
        chosen = shipped.SHIPMENTS[name].seeds if seeds is None else seeds
        if args.action != "regenerate" and name in shipped.PAPER_SHIPMENTS:
            chosen = [s for s in chosen if s in shipped.available(name)]
            if not chosen:
                print(f"{name}: not trained yet (paper scale, on a GPU: tools/gpu_check.py)")
                continue
        try:
            if args.action == "regenerate":
                shipped.regenerate(name, chosen)
            elif args.action == "list":
                print(f"{name}: {shipped.describe(name)}")
            else:
                shipped.load(name, chosen)  # manifest, sha256, config
                problem = shipped.prefix_mismatch(name, chosen[0])
                print(f"{name}: {problem or 'matches the code'}")
                failed += problem is not None
        except ValueError as err:
            raise UsageError(str(err)) from None
        except shipped.ShippedRecordError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spectral_lab``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        with _stops_interrupt():
            if args.command == "list":
                return _list()
            if args.command == "sweep":
                return _sweep(args, argv)
            if args.command == "analyze":
                return _analyze(args)
            if args.command == "records":
                return _records(args)
            return _run(args, argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except RuntimeError as err:  # another process holds the output: one line, naming it
        from .locks import OutputLocked

        if not isinstance(err, OutputLocked):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # before a run began: nothing was written
        _stop_seen()
        print(f"\n{_stopped_by(stop)} before the run began; nothing was written", file=sys.stderr)
        return _interrupted_status(stop)
