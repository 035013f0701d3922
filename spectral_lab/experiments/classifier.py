"""Minibatch SGD on a classification set: the loop behind memorization, lottery tickets and LMC.

The grokking loop (:mod:`spectral_lab.experiments.grokking`) is full-batch AdamW; these
chapters follow the paper's image experiments instead: SGD with momentum,
minibatches, a constant or cosine learning rate. :class:`ClassifierConfig`
says what to train; :func:`fit` trains it, tracking spectra from outside.

Three things the later chapters need are built into :func:`fit`:

* **Steps, not epochs, name the weights.** Step ``s`` is the model after ``s``
  updates; the minibatches of epoch ``e`` are a permutation drawn from
  ``(data_seed, e)`` alone, so a run can stop at any step and a second call
  continue it, with the same data order or, for the branches of linear mode
  connectivity, another one (``data_seed=``).
* **Masks** (lottery tickets): ``mask={"fc1.weight": 0/1 tensor, ...}`` zeroes
  those weights at the start, their gradients before every update, and the
  weights again after it, so pruned weights stay exactly zero.
* **The optimizer state** travels with the model (:attr:`FitResult.optimizer_state`),
  so a branch continues with the trunk's momentum, as Frankle et al. do.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bookkeeping import History, config_tracker, stamp
from ..config import ExperimentConfig
from ..data import ClassificationData, digits, mnist1d
from ..models import MLP, CNN1d
from ..pruning import bind_mask
from ..record import RunRecord
from ..runtime import get_device, progress_bar, seed_everything
from ..tracker import SpectralTracker

__all__ = [
    "ClassifierConfig",
    "FitResult",
    "fit",
    "evaluate_classifier",
    "loss_and_accuracy",
    "batch_order",
]

DATASETS = ("mnist1d", "digits")
ARCHITECTURES = ("mlp", "cnn")
SCHEDULES = ("cosine", "constant")
# : What :func:`fit` measures every ``eval_every`` steps (the record keeps it under
# ``meta["history"]``).
HISTORY_FIELDS = ("step", "train_loss", "train_acc", "test_loss", "test_acc")


@dataclass(frozen=True)
class ClassifierConfig(ExperimentConfig):
    """One classification run: data, model, SGD, schedule, seeds and how it is observed.

    ``ClassifierConfig()`` is the MNIST-1D setting of SPEC section 2, measured
    to show lottery tickets and linear mode connectivity in seconds: an MLP
    40-256-256-10, SGD lr 0.1 momentum 0.9 with cosine decay, batch 32, 40
    epochs (5,000 steps). ``seed`` seeds the initialisation, ``data_seed`` the
    minibatch order, ``label_seed`` which labels ``label_noise`` randomizes.
    """

    experiment: ClassVar[str] = "classifier"
    positive: ClassVar = (
        *("hidden", "channels", "lr", "batch_size", "epochs"),
        *("eval_every", "track_every", "top_k"),
    )
    non_negative: ClassVar = ("weight_decay",)
    choices: ClassVar = {"dataset": DATASETS, "model": ARCHITECTURES, "schedule": SCHEDULES}
    multiple_of: ClassVar = {"track_every": "eval_every"}
    preset: str = "custom"
    dataset: str = "mnist1d"
    label_noise: float = (
        0.0  # fraction of training labels randomized (0: true labels, 1: all random)
    )
    label_seed: int = 0
    model: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)  # MLP hidden widths
    channels: int = 32  # CNN filters per layer
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # learning rate: cosine decay to 0 over the run, or constant
    batch_size: int = 32
    epochs: int = 40
    seed: int = 0
    data_seed: int = 0
    eval_every: int = 125  # train / test loss and accuracy, every this many steps
    track_every: int = 125  # spectra snapshots; a multiple of eval_every
    top_k: int = 10
    device: str = "auto"

    def validate(self) -> None:
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(
                f"label_noise must lie in [0, 1] (a fraction of labels), got {self.label_noise}"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")

    # ---- what a run is made of -----------------------------------------------------------------
    def make_data(self) -> ClassificationData:
        """The dataset, with ``label_noise`` of its training labels randomized (seed
        ``label_seed``)."""
        data = mnist1d() if self.dataset == "mnist1d" else digits(flatten=self.model == "mlp")
        return (
            data.randomize_labels(self.label_noise, self.label_seed) if self.label_noise else data
        )

    def make_model(self, data: ClassificationData | None = None) -> nn.Module:
        """A freshly initialised model for ``data`` (default: this config's); seed torch first."""
        data = self.make_data() if data is None else data
        if self.model == "mlp":
            return MLP((int(np.prod(data.input_shape)), *self.hidden, data.n_classes))
        if len(data.input_shape) != 1:
            raise ValueError(
                f"the 1-D CNN takes signals (N, length); {data.name} has inputs "
                f"{data.input_shape}. "
                "Use model='mlp' for images"
            )
        return CNN1d(data.input_shape[0], data.n_classes, self.channels)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def steps_per_epoch(self, n_train: int) -> int:
        """Full minibatches per epoch (the last, partial one is dropped; each epoch draws a new
        order)."""
        if n_train < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the {n_train} training examples"
            )
        return n_train // self.batch_size

    def total_steps(self, n_train: int) -> int:
        return self.epochs * self.steps_per_epoch(n_train)

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of update ``step`` (0-based): ``lr`` or ``lr * (1 + cos(pi step /
        total)) / 2``."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))

    # ---- presets ---------------------------------------------------------------------------------
    @classmethod
    def quick(cls) -> "ClassifierConfig":
        """The MNIST-1D setting of SPEC section 2 (~2-4 s a run on 2 cores): dense test error about
        0.25."""
        return cls(preset="quick")

    @classmethod
    def quick_cnn(cls) -> "ClassifierConfig":
        """The same recipe with the 1-D CNN instead of the MLP."""
        return cls(preset="quick_cnn", model="cnn")

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "ClassifierConfig"]]:
        return {"quick": cls.quick, "quick_cnn": cls.quick_cnn}


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``model`` after ``step`` updates; ``record`` the spectra (``None`` with
    ``track=False``); ``history`` maps each of :data:`HISTORY_FIELDS` to an
    array over the evaluation steps; ``optimizer_state`` to continue the run
    (``fit(..., model=result.model, start_step=result.step, optimizer_state=...)``).
    """

    model: nn.Module
    record: RunRecord | None
    history: dict[str, np.ndarray]
    optimizer_state: dict
    step: int

    def __repr__(self) -> str:
        h = self.history
        last = (
            f"train acc {h['train_acc'][-1]:.3f}, test acc {h['test_acc'][-1]:.3f}"
            if len(h["step"])
            else "not evaluated"
        )
        return f"FitResult(step {self.step}: {last}; {type(self.model).__name__})"


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
) -> tuple[float, float]:
    """Mean cross-entropy and fraction correct of ``model`` on ``(x, y)``, in chunks of ``chunk``
    examples (so that a large test set never needs all its logits in memory at once)."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), chunk):
        logits = model(x[start : start + chunk])  # (n, classes)
        targets = y[start : start + chunk]
        total_loss += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == targets).sum())
    return total_loss / len(y), correct / len(y)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: ClassificationData) -> dict[str, float]:
    """``train_loss``, ``train_acc`` (on the labels trained on, random ones included),
    ``test_loss``, ``test_acc``.

    The model is put in eval mode for the measurement and returned to the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        train_loss, train_acc = loss_and_accuracy(model, data.train_x, data.train_y)
        test_loss, test_acc = loss_and_accuracy(model, data.test_x, data.test_y)
    finally:
        model.train(was_training)
    return {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
    }


def batch_order(data_seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the ``n`` training examples: a function of its
    arguments only."""
    seed = int(np.random.SeedSequence([int(data_seed), int(epoch)]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def fit(
    config: ClassifierConfig,
    model: nn.Module | None = None,
    data: ClassificationData | None = None,
    *,
    start_step: int = 0,
    stop_step: int | None = None,
    optimizer_state: dict | None = None,
    data_seed: int | None = None,
    mask: dict[str, torch.Tensor] | None = None,
    track: bool | SpectralTracker = True,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` with minibatch SGD from ``start_step`` to ``stop_step``; see the
    module doc.

    ``model`` and ``data`` default to the config's (the model seeded with
    ``config.seed``). ``stop_step`` defaults to the end of the run
    (``config.epochs`` epochs); the learning-rate schedule always refers to the
    whole run, so a run split in two pieces equals the run in one piece.
    ``data_seed`` overrides ``config.data_seed`` for the minibatch order.
    ``track``: ``True`` attaches a :class:`SpectralTracker` (every
    ``config.track_every`` steps, with the model's ``layer_pairs()``), a
    tracker of your own is used as it is, ``False`` tracks nothing (faster).
    ``out`` saves the record there (atomically) at the end.
    """
    device = get_device(config.device)
    data = (config.make_data() if data is None else data).to(device)
    if model is None:
        seed_everything(config.seed)
        model = config.make_model(data)
    model.to(device)
    n = len(data.train_y)
    per_epoch = config.steps_per_epoch(n)
    total = config.total_steps(n)
    stop = total if stop_step is None else int(stop_step)
    if not 0 <= start_step <= stop <= total:
        raise ValueError(
            f"need 0 <= start_step ({start_step}) <= stop_step ({stop}) <= the run's {total} steps"
        )
    optimizer = config.make_optimizer(model)
    if optimizer_state is not None:
        # a deep copy: SGD updates momentum buffers in place, and two branches may start from one
        # state
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))
    order_seed = config.data_seed if data_seed is None else int(data_seed)
    masked = bind_mask(model, mask) if mask else {}

    tracker = None
    if isinstance(track, SpectralTracker):
        tracker = track
    elif track:
        tracker = config_tracker(model, config)
    if tracker is not None:
        stamp(
            tracker.record,
            config,
            device,
            data_seed=order_seed,
            start_step=int(start_step),
            masked=sorted(masked),
        )
    history = History(HISTORY_FIELDS)

    @torch.no_grad()
    def apply_mask() -> None:
        for param, m in masked.values():
            param.mul_(m)

    def observe(step: int) -> None:
        last = step == stop
        if (
            step % config.eval_every
            and not last
            and not (tracker is not None and tracker.due(step))
        ):
            return
        scalars = evaluate_classifier(model, data)
        history.add(step, scalars)
        bar.set_postfix(
            loss=f"{scalars['train_loss']:.3g}",
            test_acc=f"{scalars['test_acc']:.3f}",
            refresh=False,
        )
        if tracker is not None and (tracker.due(step) or last or step == start_step):
            tracker.step(step, model, force=True, **scalars)

    apply_mask()
    model.train()
    bar = progress_bar(progress, stop - start_step, 0, desc=config.preset)
    try:
        observe(start_step)
        order, epoch = None, -1
        for step in range(start_step, stop):
            if step // per_epoch != epoch:
                epoch = step // per_epoch
                order = batch_order(order_seed, epoch, n).to(device)
            batch = order[
                (step % per_epoch) * config.batch_size : (step % per_epoch + 1) * config.batch_size
            ]
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, total)
            loss = F.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for param, m in masked.values():
                param.grad.mul_(m)
            optimizer.step()
            apply_mask()
            bar.update(1)
            observe(step + 1)
    finally:
        bar.close()
    record = None if tracker is None else tracker.record
    if record is not None:
        record.meta["history"] = history.lists()
        if out is not None:
            record.save(Path(out))
    return FitResult(model, record, history.arrays(), optimizer.state_dict(), stop)
