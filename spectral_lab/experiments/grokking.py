"""Grokking (SPEC section 2): modular addition, full-batch AdamW, and the loop behind the chapter.

* :class:`GrokkingConfig` - one run. ``GrokkingConfig()`` is the paper's setting; presets
  ``quick()`` / ``quick_no_wd()`` / ``quick_more_data()`` for a 2-core CPU, ``full()`` /
  ``full_no_wd()`` / ``full_more_data()`` for the paper's three rows on a GPU.
* :func:`train` - the loop. The chapter writes it out once (forward, loss, backward, step,
  track); afterwards it, the weight-decay sweep and ``python -m spectral_lab run grokking`` all
  call :func:`train`. Step ``s`` names the weights after ``s`` optimizer updates: step 0 is
  the initialisation, step ``config.steps`` the end, and both are always recorded.
* :func:`load_or_train` - a paper-scale record when one is on disk, else a run trained now.

A run given an ``out`` path writes its record there and a checkpoint beside it
(model, optimizer, step, RNG state) every ``checkpoint_every`` steps and at the
end, each file atomically. ``resume=True`` continues from the checkpoint; on the
CPU the result is identical to a run that was never interrupted.

Chapter: "Grokking" (book/grokking.ipynb); the weight-decay sweep builds on it
(:mod:`spectral_lab.experiments.weight_decay`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bookkeeping import History, config_tracker, stamp
from ..config import Experiment, ExperimentConfig
from ..data import ModularData, modular_addition
from ..files import atomic_write
from ..models import ModularMLP, ModularTransformer
from ..pruning import svd_pruning_losses
from ..record import RunRecord, plain_config
from ..runtime import get_device, progress_bar, seed_everything
from ..sweeps import sweep
from ..tracker import SpectralTracker
from .classifier import loss_and_accuracy

__all__ = [
    "GrokkingConfig",
    "ModularSetup",
    "TrainResult",
    "train",
    "evaluate",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "check_record",
    "load_or_train",
    "load_or_train_all",
    "TrainingJob",
    "run_training_job",
    "HISTORY_FIELDS",
    "PAPER_WEIGHT_DECAYS",
    "EXPERIMENT",
]

MODELS = ("transformer", "mlp")


@dataclass(frozen=True)
class ModularSetup(ExperimentConfig):
    """Model, data, optimizer and cadence shared by the grokking runs and the weight-decay sweep.

    Defaults are the paper's setting: p=113, 30 % of the pairs for training,
    a one-layer transformer (d_model 128, 4 heads, MLP 512), AdamW lr 1e-3,
    betas (0.9, 0.98), full batch, 40k steps. For ``model="mlp"``, ``d_model``
    is the embedding width, ``d_mlp`` the hidden width, and ``n_heads`` unused.
    """

    positive: ClassVar = (
        *("p", "d_model", "n_heads", "d_mlp", "lr", "steps"),
        *("eval_every", "track_every", "checkpoint_every", "top_k"),
    )
    choices: ClassVar = {"model": MODELS}
    multiple_of: ClassVar = {"track_every": "eval_every"}
    added_fields: ClassVar = ("track_pruning",)
    preset: str = "custom"
    model: str = "transformer"
    p: int = 113
    train_fraction: float = 0.3
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    steps: int = 40_000
    eval_every: int = 100  # train / validation loss and accuracy, every this many steps
    track_every: int = 100  # spectra snapshots (and pruned-model losses); a multiple of eval_every
    checkpoint_every: int = 1_000  # when the run writes to a file: record + checkpoint
    top_k: int = 10
    prune_fraction: float = 0.5  # SVD pruning at each snapshot: the top ceil(f R) vs the rest
    # The SVD-pruned losses at each snapshot: about 30 % of a quick run's time with a snapshot
    # every 25 steps. Off, the record has no val_*_svd_* scalars.
    track_pruning: bool = True
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.p < 2:
            raise ValueError(f"p must be at least 2, got {self.p}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(
                f"train_fraction must lie strictly between 0 and 1, got {self.train_fraction}"
            )
        if self.model == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.prune_fraction < 1.0:
            raise ValueError(
                f"prune_fraction must lie strictly between 0 and 1, got {self.prune_fraction}"
            )

    # ---- what a run is made of (called by train) -------------------------------------------------
    def make_data(self) -> ModularData:
        """The train / validation split of ``(a + b) mod p`` for this config's seed."""
        return modular_addition(self.p, self.train_fraction, self.seed)

    def make_model(self) -> torch.nn.Module:
        """A freshly initialised model (seed torch first for a reproducible initialisation)."""
        if self.model == "transformer":
            return ModularTransformer(self.p, self.d_model, self.n_heads, self.d_mlp)
        return ModularMLP(self.p, self.d_model, self.d_mlp)


@dataclass(frozen=True)
class GrokkingConfig(ModularSetup):
    """One grokking run: :class:`ModularSetup` plus its AdamW ``weight_decay``.

    ``GrokkingConfig()`` is the paper's main row (wd 1). Presets: ``quick`` /
    ``quick_no_wd`` / ``quick_more_data`` (a 2-core CPU, under a minute each) and
    ``full`` / ``full_no_wd`` / ``full_more_data`` (the paper's rows: wd 1, wd 0,
    and 90 % data with wd 0; a GPU).
    """

    experiment: ClassVar[str] = "grokking"
    non_negative: ClassVar = ("weight_decay",)
    weight_decay: float = 1.0

    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW on every parameter (decoupled weight decay on all of them, as in the paper's
        code)."""
        return torch.optim.AdamW(
            model.parameters(),
            lr=self.lr,
            betas=(self.beta1, self.beta2),
            weight_decay=self.weight_decay,
        )

    @classmethod
    def quick(cls) -> GrokkingConfig:
        """Groks on a CPU core in about half a minute (27 s untracked on this project's 2-core
        machine, one thread): the same transformer at d 64, MLP 256, p=43, half the pairs,
        lr 5e-3, wd 1, 1,500 steps."""
        return cls(preset="quick", **QUICK_SETTING)

    @classmethod
    def quick_no_wd(cls) -> GrokkingConfig:
        """``quick()`` without weight decay: the control that does not generalize in the same
        budget."""
        return cls(preset="quick_no_wd", **dict(QUICK_SETTING, weight_decay=0.0))

    @classmethod
    def quick_more_data(cls) -> GrokkingConfig:
        """``quick()`` with 90 % of the pairs and no weight decay, 1,000 steps: generalizes
        without weight decay, at a larger norm than ``quick()`` (the quick stand-in for
        ``full_more_data``)."""
        return cls(
            preset="quick_more_data",
            **dict(QUICK_SETTING, train_fraction=0.9, weight_decay=0.0, steps=1000),
        )

    @classmethod
    def full(cls) -> GrokkingConfig:
        """The paper: p=113, 30 % data, d 128, 4 heads, MLP 512, AdamW 1e-3, wd 1, 40k
        full-batch steps."""
        return cls(preset="full")

    @classmethod
    def full_no_wd(cls) -> GrokkingConfig:
        """The paper's row without weight decay: no grokking and no low rank in 40k steps."""
        return cls(preset="full_no_wd", weight_decay=0.0)

    @classmethod
    def full_more_data(cls) -> GrokkingConfig:
        """The paper's row with 90 % of the pairs and no weight decay: low rank early, a much
        larger norm."""
        return cls(preset="full_more_data", train_fraction=0.9, weight_decay=0.0)

    @classmethod
    def presets(cls) -> dict[str, Callable[[], GrokkingConfig]]:
        return {
            "quick": cls.quick,
            "quick_no_wd": cls.quick_no_wd,
            "quick_more_data": cls.quick_more_data,
            "full": cls.full,
            "full_no_wd": cls.full_no_wd,
            "full_more_data": cls.full_more_data,
        }


#: The quick grokking setting. Measured on a 2-core CPU with tracking every 25 steps: 14-17 s a run;
#: wd 1 fits the training set by step 75 and reaches 95 % validation accuracy at step 600 (seeds 1
#: and 2: 850 and 1,125; seed 3 not within 2,000 steps), wd 0 ends at 34 %.
QUICK_SETTING = dict(
    model="transformer",
    p=43,
    train_fraction=0.5,
    d_model=64,
    n_heads=4,
    d_mlp=256,
    lr=5e-3,
    weight_decay=1.0,
    steps=1500,
    eval_every=25,
    track_every=25,
    checkpoint_every=500,
)

#: The paper's weight decays (section 5).
PAPER_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)

#: What :func:`evaluate` measures every ``eval_every`` steps (the record keeps it under
#: ``meta["history"]``).
HISTORY_FIELDS = ("step", "train_loss", "train_acc", "val_loss", "val_acc")


@dataclass
class TrainResult:
    """What :func:`train` returns: the run ``record``, the trained ``model`` and the evaluation
    ``history``.

    ``history`` maps each of :data:`HISTORY_FIELDS` to an array over the
    evaluation steps (every ``eval_every``), finer than the record's snapshots.
    """

    record: RunRecord
    model: nn.Module
    history: dict[str, np.ndarray]

    def __repr__(self) -> str:
        h = self.history
        last = (
            f"step {int(h['step'][-1])}: train acc {h['train_acc'][-1]:.3f}, "
            f"val acc {h['val_acc'][-1]:.3f}"
            if len(h["step"])
            else "no evaluation yet"
        )
        return f"TrainResult({last}; {type(self.model).__name__}; {self.record!r})"


def evaluate(model: nn.Module, data: ModularData) -> dict[str, float]:
    """Full-batch ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (cross-entropy, fraction
    correct)."""
    train_loss, train_acc = loss_and_accuracy(model, data.train_x, data.train_y)
    val_loss, val_acc = loss_and_accuracy(model, data.test_x, data.test_y)
    return {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
    }


def pruned_scalars(model: nn.Module, data: ModularData, fraction: float) -> dict[str, float]:
    """The snapshot's SVD-pruning scalars: ``val_loss_svd_top``, ``val_acc_svd_top`` and the same
    for ``bottom`` (:func:`~spectral_lab.pruning.svd_pruning_losses` on the validation pairs)."""
    losses = svd_pruning_losses(
        model,
        lambda m: loss_and_accuracy(m, data.test_x, data.test_y),
        fraction,
        parts=("top", "bottom"),
    )
    out = {}
    for part, (loss, acc) in losses.items():
        out[f"val_loss_svd_{part}"], out[f"val_acc_svd_{part}"] = loss, acc
    return out


# ---- files ---------------------------------------------------------------------------------------
def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where the checkpoint of the run recorded at ``out`` lives: ``runs/grok.npz`` ->
    ``runs/grok.ckpt.pt``."""
    return Path(out).with_suffix(".ckpt.pt")


def save_checkpoint(path: Path, config, step: int, model: nn.Module, optimizer, **extra) -> None:
    """Write the state a run continues from: ``step``, the config's ``asdict``, model, optimizer,
    torch's RNG state and ``extra`` (tensors or plain values), atomically. A write error is an
    ``OSError`` naming ``path``."""
    state = {
        "step": step,
        "experiment": getattr(config, "experiment", ""),
        "config": plain_config(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **extra,
    }
    # an interrupted save leaves the old one whole
    written(path, lambda: atomic_write(path, lambda handle: torch.save(state, handle)))


def written(path: Path, save: Callable[[], object]) -> None:
    """``save()``; an ``OSError`` it raises (a full disk, a read-only folder) names ``path``."""
    try:
        save()
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err


def load_checkpoint(path: Path, config, model: nn.Module, optimizer, device) -> dict:
    """Load the checkpoint at ``path`` into ``model`` and ``optimizer`` and restore torch's RNG
    state; returns the checkpoint's dict (its ``"step"`` and any extras).

    Refuses, with ``ValueError`` naming the file and the way out, a file that is not a
    checkpoint, one without a stored config, and one of another experiment, config or model.
    """
    fix = f"delete {path} to start over, or point --out elsewhere"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, not a zip, a pickle with code, ...: all unreadable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot resume from {path}: not a readable checkpoint ({reason}); {fix}")
    if not isinstance(state, dict) or not {"step", "model", "optimizer"} <= set(state):
        raise ValueError(f"cannot resume from {path}: not a spectral_lab checkpoint; {fix}")
    if not isinstance(state.get("config"), dict):
        raise ValueError(
            f"cannot resume from {path}: it stores no config (written before checkpoints kept "
            f"one), so it cannot be checked against this run; {fix}"
        )
    experiment = getattr(config, "experiment", "")
    if state.get("experiment") != experiment:
        raise ValueError(
            f"cannot resume from {path}: it is a checkpoint of {state.get('experiment')!r}, "
            f"not {experiment!r}; {fix}"
        )
    differences = config.differences(state["config"], ignore=("device",))
    if differences:
        listed = "; ".join(
            f"{k}: this run {a!r}, the checkpoint {b!r}" for k, (a, b) in differences.items()
        )
        raise ValueError(
            f"cannot resume from {path}: it was made with a different config ({listed}); "
            f"resume with the same preset and overrides, or {fix}"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        reason = str(err).strip().splitlines()[0]
        raise ValueError(
            f"cannot resume from {path}: it holds another model ({reason}); {fix}"
        ) from None
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state


def _save(out: Path, record: RunRecord, history: History, step: int, config, model, optimizer):
    """Record first, then checkpoint: a record is never older than the checkpoint beside it."""
    record.meta["history"] = history.lists()
    written(out, lambda: record.save(out))
    save_checkpoint(checkpoint_path(out), config, step, model, optimizer)


def _last_due(tracker: SpectralTracker, step: int) -> int | None:
    if isinstance(tracker.every, int):
        return step - step % tracker.every
    due = [s for s in tracker.every if s <= step]
    return max(due) if due else None


def _resume(config, out: Path, model: nn.Module, optimizer, device):
    ckpt = checkpoint_path(out)
    missing = [str(p) for p in (out, ckpt) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"cannot resume: {' and '.join(missing)} not found; a resumable run leaves both the "
            f"record and {ckpt.name} beside it. Start the run without resume (or --resume) instead"
        )
    record = RunRecord.load(out)
    check_record(record, config, out)
    state = load_checkpoint(ckpt, config, model, optimizer, device)
    step = int(state["step"])
    record.truncate(step)
    saved = History(HISTORY_FIELDS, record.meta.get("history"))
    return record, saved.until(step), step


def check_record(record: RunRecord, config, out: Path, **meta) -> None:
    """Refuse, with ``ValueError`` naming ``out``, a record of another experiment (or ``meta``
    entry, such as an architecture's ``model``) or config."""
    wanted = {"experiment": getattr(config, "experiment", ""), **meta}
    for key, value in wanted.items():
        if record.meta.get(key) != value:
            raise ValueError(
                f"cannot resume {out}: it holds a run of {key} {record.meta.get(key)!r}, not "
                f"{value!r}; choose another --out, or delete {out} to start over"
            )
    differences = config.differences(record.config, ignore=("device",))
    if differences:
        listed = "; ".join(
            f"{k}: this run {a!r}, the record {b!r}" for k, (a, b) in differences.items()
        )
        raise ValueError(
            f"cannot resume {out}: it was made with a different config ({listed}); "
            "resume with the same preset and overrides, or choose another output path"
        )


# ---- the loop ------------------------------------------------------------------------------------
def train(
    config: GrokkingConfig,
    model: nn.Module | None = None,
    data: ModularData | None = None,
    tracker: SpectralTracker | None = None,
    *,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data`` as ``config`` says, tracking spectra; returns a
    :class:`TrainResult`.

    ``config`` is a :class:`GrokkingConfig` (anything with its fields and
    ``make_model`` / ``make_data`` / ``make_optimizer``). ``model``, ``data`` and
    ``tracker`` default to the config's; a tracker of your own keeps its cadence
    and layer selection. At every snapshot the record gets the losses and
    accuracies of :func:`evaluate` and, with ``config.track_pruning``, of the
    SVD-pruned models (:func:`pruned_scalars`). ``progress``: ``None`` shows a
    bar only on a terminal and never under ``CI``; ``True`` / ``False`` force it.
    ``out``: save the record there and a checkpoint beside it
    (:func:`checkpoint_path`); ``resume=True`` continues from those files.
    """
    device = get_device(config.device)
    if model is None:
        seed_everything(config.seed)
        model = config.make_model()
    model.to(device)
    data = (config.make_data() if data is None else data).to(device)
    optimizer = config.make_optimizer(model)
    out = None if out is None else Path(out)
    start = 0
    if resume:
        if out is None or tracker is not None:
            raise ValueError(
                "resume=True needs out= (the record to continue) and no tracker of your own"
            )
        record, history, start = _resume(config, out, model, optimizer, device)
        tracker = SpectralTracker(
            model, every=config.track_every, top_k=config.top_k, record=record
        )
        expected = start if start == config.steps else _last_due(tracker, start)
        if len(record) == 0 or record.steps[-1] != expected:
            raise ValueError(
                f"cannot resume {out}: the record ends at step {record.steps[-1:]} but the "
                f"checkpoint is at step {start}; the two files are from different runs"
            )
    else:
        tracker = config_tracker(model, config) if tracker is None else tracker
        history = History(HISTORY_FIELDS)
    record = stamp(tracker.record, config, device)

    def observe(step: int) -> None:
        final = step == config.steps
        scalars = None
        if step % config.eval_every == 0 or final:
            scalars = evaluate(model, data)
            history.add(step, scalars)
            bar.set_postfix(
                loss=f"{scalars['train_loss']:.3g}",
                val_acc=f"{scalars['val_acc']:.3f}",
                refresh=False,
            )
        if tracker.due(step) or final:
            scalars = dict(scalars or evaluate(model, data))
            if getattr(config, "track_pruning", True):
                scalars.update(pruned_scalars(model, data, config.prune_fraction))
            tracker.step(step, model, force=True, **scalars)
        if out is not None and step > start and (step % config.checkpoint_every == 0 or final):
            _save(out, record, history, step, config, model, optimizer)

    bar = progress_bar(progress, config.steps, start, desc=f"{getattr(config, 'preset', 'run')}")
    try:
        if start == 0:
            observe(0)
        for step in range(start, config.steps):
            loss = F.cross_entropy(model(data.train_x), data.train_y)  # full batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            observe(step + 1)
    finally:
        bar.close()
    tracker.flush()  # a tracker of your own may decompose in the background
    record.meta["history"] = history.lists()
    return TrainResult(record, model, history.arrays())


def _matches(record: RunRecord, config) -> dict:
    if record.meta.get("experiment") != getattr(config, "experiment", None):
        return {"experiment": (config.experiment, record.meta.get("experiment"))}
    return config.differences(record.config)


def load_or_train(
    config: GrokkingConfig, path: str | os.PathLike, fallback=None, progress: bool | None = None
) -> RunRecord:
    """The record at ``path`` if it holds a finished run of ``config``; otherwise a run trained now.

    A record matches when its experiment, preset and every training setting
    equal ``config``'s (where and how often it was observed may differ: see
    :data:`~spectral_lab.config.OBSERVATION_FIELDS`), so a quick record is
    never shown as a full one. Without a match, ``fallback`` (default:
    ``config``) is trained in place. A run of ``config`` itself is saved to
    ``path`` when nothing is there yet; a fallback run and an occupied
    ``path`` are never written, so a paper-scale record is never overwritten.
    """
    found = _stored_or_job(config, path, fallback)
    if isinstance(found, RunRecord):
        return found
    return train(found.config, progress=progress, out=found.out).record


@dataclass(frozen=True)
class TrainingJob:
    """A run :func:`load_or_train_all` hands to a sweep engine: what to train, and where to keep
    it (``None``: nowhere)."""

    config: GrokkingConfig
    out: str | None = None


def run_training_job(job: TrainingJob) -> RunRecord:
    """The ``run`` of :func:`load_or_train_all`'s sweep (top level, so a worker process can
    import it)."""
    return train(job.config, progress=False, out=job.out).record


def load_or_train_all(
    requests: Mapping[str, tuple[GrokkingConfig, str | os.PathLike, GrokkingConfig | None]],
    engine: str = "serial",
    progress: bool | None = None,
    **engine_options,
) -> dict[str, RunRecord]:
    """:func:`load_or_train` of several runs, the ones to train on a sweep engine at once.

    ``requests`` maps a name to ``(config, path, fallback)`` as :func:`load_or_train` takes
    them; the records come back under the same names. With ``engine="processes"`` the runs
    that have to be trained share this machine's cores (one run per core, each with one thread:
    the same numbers as here, see :mod:`spectral_lab.sweeps`); ``engine_options`` (``workers``,
    ``retries``, ...) go to :func:`spectral_lab.sweep`.
    """
    found = {name: _stored_or_job(*request) for name, request in requests.items()}
    jobs = {name: job for name, job in found.items() if isinstance(job, TrainingJob)}
    trained = sweep(
        list(jobs.values()), run_training_job, engine=engine, progress=progress, **engine_options
    )
    found.update(zip(jobs, trained))
    return found


def _stored_or_job(
    config: GrokkingConfig, path: str | os.PathLike, fallback: GrokkingConfig | None
) -> RunRecord | TrainingJob:
    """:func:`load_or_train`'s choice, without training: the matching record, or what to train."""
    path = Path(path)
    if path.exists():
        record = RunRecord.load(path)
        differences = _matches(record, config)
        finished = len(record) and int(record.steps[-1]) == config.steps
        if not differences and finished:
            return record
        last = int(record.steps[-1]) if len(record) else 0
        why = (
            f"differs in {', '.join(differences)}"
            if differences
            else f"is unfinished (step {last} of {config.steps})"
        )
        chosen = fallback if fallback is not None else config
        print(
            f"{path} {why} from the {config.preset!r} preset; training {chosen.preset!r} here "
            "instead (the file is left as it is)"
        )
        return TrainingJob(chosen)
    if fallback is not None:
        return TrainingJob(fallback)
    return TrainingJob(config, str(path))


# ---- the command line: python -m spectral_lab run grokking --preset full --out runs/grok.npz -----
def _run_for_cli(config, out, resume=False, progress=None):
    return train(config, out=out, resume=resume, progress=progress).record


def _outputs(config, out) -> list[Path]:
    return [Path(out), checkpoint_path(out)]


EXPERIMENT = Experiment(
    GrokkingConfig,
    _run_for_cli,
    _outputs,
    ".npz",
    "the run record (.npz); its checkpoint goes beside it (.ckpt.pt)",
)
