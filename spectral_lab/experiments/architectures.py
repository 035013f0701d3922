"""The same bias in four kinds of network: ConvNet, LSTM, Transformer language model, diffusion
UNet.

The paper's section 4 (SPEC section 2, "Across architectures") trains image
classifiers, a UNet diffusion model, an LSTM and a Transformer language model,
and finds in all of them what the MLPs of the earlier chapters show: the top
singular values grow away from the rest, NormEffRank falls, keeping the top
half of every matrix's SVD keeps the loss close to the full model's while the
bottom half does not, and consecutive layers align only weakly. Here each
kind has a small stand-in that trains offline on a CPU:

=================  ====================================  =====================================
config             model (:mod:`spectral_lab.models`)    task and held-out loss
=================  ====================================  =====================================
ConvNetConfig      :class:`DigitsCNN`, BatchNorm         digits 8x8, test cross-entropy
LSTMConfig         :class:`RowLSTM`, 2 layers            digits read row by row, test cross-entropy
TransformerConfig  :class:`TransformerLM`, LayerNorm     grammar corpus, held-out next-token
cross-entropy
UNetConfig         :class:`TinyUNet`, GroupNorm          denoising 8x8 digits (DDPM), noise MSE at
fixed
                                                         steps and noise on held-out digits
=================  ====================================  =====================================

Each config has ``quick()`` (a share of about 25 s of a 2-core CPU) and
``full()`` (longer, wider, for a GPU). :func:`train_architecture` is one loop
for all four (minibatches, AdamW or SGD, warm-up and cosine decay, a
:class:`~spectral_lab.tracker.SpectralTracker` attached from outside); it
returns an :class:`ArchitectureRun` with the record, the loss history, the
SVD-pruning losses (:meth:`ArchitectureConfig.pruning_losses`) and the paper's cross-layer
alignments at the first and last step (:func:`alignment_matrices`).

Pruning re-estimates BatchNorm running statistics on the training inputs
(``torch.optim.swa_utils.update_bn``); LayerNorm and GroupNorm normalise each
example by its own statistics and keep nothing to re-estimate.

Chapter: "Across architectures".
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bookkeeping import History, config_tracker, stamp
from ..config import Experiment, ExperimentConfig
from ..data import ClassificationData, Corpus, digits, grammar_corpus
from ..models import DigitsCNN, RowLSTM, TinyUNet, TransformerLM
from ..pruning import svd_pruning_losses
from ..record import RunRecord
from ..runtime import get_device, progress_bar, seed_everything
from ..spectra import alignment, diagonal_mean
from .classifier import batch_order, evaluate_classifier
from .grokking import check_record, checkpoint_path, load_checkpoint, save_checkpoint, written

__all__ = [
    "EXPERIMENTS",
    "ArchitectureConfig",
    "ConvNetConfig",
    "LSTMConfig",
    "TransformerConfig",
    "UNetConfig",
    "CONFIGS",
    "ChapterRuns",
    "ArchitectureRun",
    "train_architecture",
    "alignment_matrices",
    "alignment_summary",
]

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class ArchitectureConfig(ExperimentConfig, ABC):
    """What the four runs share: optimizer, schedule, length, seeds and how the run is observed.

    The learning rate warms up linearly over ``warmup`` steps and then decays
    to zero along a cosine; ``clip`` caps the gradient norm (0: no clipping).
    ``width`` is the model's size knob (channels, hidden units, ``d_model``).
    Subclasses say what is trained: :meth:`make_data`, :meth:`make_model`,
    :meth:`batch`, :meth:`loss` and :meth:`heldout_loss`.
    """

    experiment: ClassVar[str] = "architectures"
    kind: ClassVar[str] = ""
    # declared rules (see ExperimentConfig); subclasses add their own
    non_negative: ClassVar = ("weight_decay", "clip")
    choices: ClassVar = {"optimizer": OPTIMIZERS}
    multiple_of: ClassVar = {"track_every": "eval_every"}
    positive: ClassVar[tuple[str, ...]] = (
        "lr",
        "width",
        "batch_size",
        "steps",
        "eval_every",
        "track_every",
        "top_k",
        "checkpoint_every",
    )
    added_fields: ClassVar = ("checkpoint_every",)
    preset: str = "custom"
    width: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    warmup: int = 0
    clip: float = 1.0
    batch_size: int = 64
    steps: int = 1000
    seed: int = 0
    data_seed: int = 0
    eval_every: int = 100
    track_every: int = 100
    checkpoint_every: int = 1000  # when the run writes to a file: record + checkpoint
    top_k: int = 10
    device: str = "auto"

    def validate(self) -> None:
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must lie in [0, steps={self.steps}), got {self.warmup}")

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(),
                lr=self.lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
        return torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then ``lr (1 + cos(pi s / (steps - warmup))) /
        2``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return (
            self.lr
            * 0.5
            * (1.0 + math.cos(math.pi * (step - self.warmup) / (self.steps - self.warmup)))
        )

    # ---- what each kind defines (the four configs below; the base cannot be instantiated)
    # ------------
    @abstractmethod
    def make_data(self):
        """The data set, on the CPU."""

    @abstractmethod
    def make_model(self, data) -> nn.Module:
        """The model, sized for ``data``."""

    @abstractmethod
    def batch(self, data, step: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The tensors of training step ``step`` (on the data's device)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The training loss on one batch."""

    @abstractmethod
    def heldout_loss(self, model: nn.Module, data) -> float:
        """The loss on held-out data, the model in eval mode; the same number every call."""

    def pruning_losses(self, model: nn.Module, data, fraction: float = 0.5) -> dict[str, float]:
        """Held-out loss of ``model`` and of its SVD-pruned copies: ``{"full", "top", "bottom"}``.

        :func:`~spectral_lab.pruning.svd_pruning_losses` with this kind's held-out
        loss; BatchNorm statistics of each pruned copy are re-estimated on the
        training inputs first. ``model`` is not changed.
        """
        inputs = self.norm_inputs(data)

        def refresh(pruned: nn.Module) -> None:
            torch.optim.swa_utils.update_bn(inputs, pruned)

        return svd_pruning_losses(
            model,
            lambda m: self.heldout_loss(m, data),
            fraction,
            refresh=refresh if inputs else None,
        )

    def norm_inputs(self, data) -> list[torch.Tensor]:
        """Input batches for re-estimating BatchNorm statistics after pruning (none: no
        BatchNorm)."""
        return []

    @classmethod
    @abstractmethod
    def quick(cls) -> "ArchitectureConfig":
        """A share of about 25 s of a 2-core CPU; each kind defines its own."""

    @classmethod
    @abstractmethod
    def full(cls) -> "ArchitectureConfig":
        """Wider and longer, for a GPU; each kind defines its own."""

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "ArchitectureConfig"]]:
        return {"quick": cls.quick, "full": cls.full}


class _DigitsClassifier:
    """Digits images ``(N, 1, 8, 8)``, epochs of shuffled minibatches, cross-entropy."""

    def make_data(self) -> ClassificationData:
        return digits(flatten=False)

    def batch(self, data: ClassificationData, step: int, generator: torch.Generator):
        n = len(data.train_y)
        per_epoch = n // self.batch_size
        order = batch_order(self.data_seed, step // per_epoch, n).to(data.train_y.device)
        rows = order[
            (step % per_epoch) * self.batch_size : (step % per_epoch + 1) * self.batch_size
        ]
        return data.train_x[rows], data.train_y[rows]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def heldout_loss(self, model: nn.Module, data: ClassificationData) -> float:
        return evaluate_classifier(model, data)["test_loss"]


@dataclass(frozen=True)
class ConvNetConfig(_DigitsClassifier, ArchitectureConfig):
    """:class:`~spectral_lab.models.DigitsCNN` (``width`` channels, BatchNorm) on digits, SGD with
    momentum."""

    kind: ClassVar[str] = "convnet"
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 1e-3

    def make_model(self, data: ClassificationData) -> nn.Module:
        return DigitsCNN(data.n_classes, self.width)

    def norm_inputs(self, data: ClassificationData) -> list[torch.Tensor]:
        return list(data.train_x.split(256))

    @classmethod
    def quick(cls) -> "ConvNetConfig":
        return cls(preset="quick", width=32, steps=800, eval_every=50, track_every=50)

    @classmethod
    def full(cls) -> "ConvNetConfig":
        return cls(preset="full", width=128, steps=10_000, eval_every=250, track_every=250)


@dataclass(frozen=True)
class LSTMConfig(_DigitsClassifier, ArchitectureConfig):
    """:class:`~spectral_lab.models.RowLSTM` (``width`` hidden units, ``layers`` layers) reading
    digits row by row."""

    kind: ClassVar[str] = "lstm"
    positive: ClassVar[tuple[str, ...]] = ("layers",)
    width: int = 64
    layers: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.1

    def make_model(self, data: ClassificationData) -> nn.Module:
        return RowLSTM(data.n_classes, self.width, row=data.input_shape[-1], layers=self.layers)

    @classmethod
    def quick(cls) -> "LSTMConfig":
        return cls(preset="quick", steps=600, eval_every=50, track_every=50)

    @classmethod
    def full(cls) -> "LSTMConfig":
        return cls(preset="full", width=256, steps=10_000, eval_every=250, track_every=250)


@dataclass(frozen=True)
class TransformerConfig(ArchitectureConfig):
    """:class:`~spectral_lab.models.TransformerLM` (``d_model = width``) on
    :func:`~spectral_lab.data.grammar_corpus`.

    A batch is ``batch_size`` random windows of ``context + 1`` tokens of the
    training stream; the held-out loss is the mean next-token cross-entropy
    over consecutive windows of the held-out stream.
    """

    kind: ClassVar[str] = "transformer"
    positive: ClassVar[tuple[str, ...]] = (
        "n_heads",
        "n_layers",
        "context",
        "n_sentences",
    )
    width: int = 64
    n_heads: int = 4
    n_layers: int = 2
    context: int = 32
    n_sentences: int = 6000
    corpus_seed: int = 0
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 50
    batch_size: int = 32

    def validate(self) -> None:
        super().validate()
        if self.width % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide width={self.width}")

    def make_data(self) -> Corpus:
        return grammar_corpus(self.n_sentences, seed=self.corpus_seed)

    def make_model(self, data: Corpus) -> nn.Module:
        return TransformerLM(len(data.vocab), self.context, self.width, self.n_heads, self.n_layers)

    def batch(self, data: Corpus, step: int, generator: torch.Generator):
        starts = torch.randint(
            len(data.train) - self.context - 1, (self.batch_size,), generator=generator
        )
        rows = starts[:, None] + torch.arange(self.context + 1)  # (B, context + 1)
        window = data.train[rows.to(data.train.device)]
        return window[:, :-1], window[:, 1:]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    @torch.no_grad()
    def heldout_loss(self, model: nn.Module, data: Corpus) -> float:
        windows = data.windows("test", self.context + 1)  # (n, context + 1)
        was_training = model.training
        model.eval()
        try:
            return float(self.loss(model, (windows[:, :-1], windows[:, 1:])))
        finally:
            model.train(was_training)

    @classmethod
    def quick(cls) -> "TransformerConfig":
        return cls(preset="quick", steps=600, eval_every=50, track_every=50)

    @classmethod
    def full(cls) -> "TransformerConfig":
        return cls(
            preset="full",
            width=256,
            n_heads=8,
            n_layers=4,
            context=64,
            n_sentences=200_000,
            batch_size=64,
            steps=20_000,
            warmup=500,
            eval_every=500,
            track_every=500,
        )


@dataclass(frozen=True)
class UNetConfig(_DigitsClassifier, ArchitectureConfig):
    """:class:`~spectral_lab.models.TinyUNet` (``width`` channels) trained as a DDPM on digits
    scaled to [-1, 1].

    ``diffusion_steps`` noise levels with betas linear from 1e-4 to
    ``beta_end``; the model predicts the noise and the loss is its mean
    squared error at a uniformly drawn step. The held-out loss is that error
    on the test digits at ``eval_levels`` evenly spaced steps, with noise drawn
    from a generator seeded ``eval_seed``: the same noisy images every time.
    """

    kind: ClassVar[str] = "unet"
    positive: ClassVar[tuple[str, ...]] = ("eval_levels",)
    diffusion_steps: int = 100
    beta_end: float = 0.05
    eval_levels: int = 8
    eval_seed: int = 1234
    lr: float = 2e-3
    weight_decay: float = 0.5

    def validate(self) -> None:
        super().validate()
        if self.diffusion_steps < 2 or self.eval_seed < 0:
            raise ValueError("need diffusion_steps >= 2 and eval_seed >= 0")
        if not 1e-4 < self.beta_end < 1:
            raise ValueError(f"beta_end must lie in (1e-4, 1), got {self.beta_end}")

    def alpha_bar(self, device=None) -> torch.Tensor:
        """``prod_{s <= t} (1 - beta_s)`` for ``t = 0 .. diffusion_steps - 1``: the signal kept at
        step t."""
        betas = torch.linspace(1e-4, self.beta_end, self.diffusion_steps, dtype=torch.float64)
        return torch.cumprod(1 - betas, 0).to(device=device, dtype=torch.float32)

    def make_data(self) -> ClassificationData:
        data = digits(flatten=False)
        return ClassificationData(
            data.name,
            data.n_classes,
            2 * data.train_x - 1,
            data.train_y,
            2 * data.test_x - 1,
            data.test_y,
            data.randomized,
        )

    def make_model(self, data: ClassificationData) -> nn.Module:
        return TinyUNet(self.width)

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``: the forward process at step ``t``."""
        abar = self.alpha_bar(x0.device)[t][:, None, None, None]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def batch(self, data: ClassificationData, step: int, generator: torch.Generator):
        x0 = super().batch(data, step, generator)[0]  # a minibatch of clean images
        t = torch.randint(self.diffusion_steps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return self.noisy(x0, t, noise), t, noise

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x_t, t, noise = batch
        return F.mse_loss(model(x_t, t), noise)

    @torch.no_grad()
    def heldout_loss(self, model: nn.Module, data: ClassificationData) -> float:
        x0 = data.test_x
        levels = torch.linspace(0, self.diffusion_steps - 1, self.eval_levels).round().long()
        generator = torch.Generator().manual_seed(self.eval_seed)
        was_training = model.training
        model.eval()
        try:
            losses = []
            for level in levels.tolist():
                noise = torch.randn(x0.shape, generator=generator).to(x0.device)
                t = torch.full((len(x0),), level, dtype=torch.long, device=x0.device)
                losses.append(float(self.loss(model, (self.noisy(x0, t, noise), t, noise))))
        finally:
            model.train(was_training)
        return float(np.mean(losses))

    @classmethod
    def quick(cls) -> "UNetConfig":
        return cls(preset="quick", steps=600, eval_every=50, track_every=50)

    @classmethod
    def full(cls) -> "UNetConfig":
        return cls(
            preset="full",
            width=128,
            diffusion_steps=1000,
            beta_end=0.02,
            steps=20_000,
            batch_size=128,
            eval_every=500,
            track_every=500,
        )


#: Model kind -> config class, in the order of the chapter.
CONFIGS: dict[str, type[ArchitectureConfig]] = {
    c.kind: c for c in (ConvNetConfig, LSTMConfig, TransformerConfig, UNetConfig)
}


# ---- what is measured
# ------------------------------------------------------------------------------
@torch.no_grad()
def alignment_matrices(model: nn.Module, k: int = 10) -> dict[str, np.ndarray]:
    """The paper's cross-layer alignments of ``model``: ``{pair: |Vh_next[:k] @ U_prev[:, :k]|}``.

    Pairs come from ``model.alignment_pairs()`` (conv layers at their centre
    tap, Q with K per head, V with O, MLP in with out, LSTM gate blocks). Each
    value is ``(k', k')`` with ``k' = min(k, ranks)``, or ``(H, k', k')`` for
    per-head pairs (see :func:`spectral_lab.spectra.alignment`).
    """
    return {
        name: alignment(W_prev.detach().double(), W_next.detach().double(), k).cpu().numpy()
        for name, (W_prev, W_next) in model.alignment_pairs().items()
    }


def alignment_summary(matrices: dict[str, np.ndarray], k: int = 10) -> dict[str, float]:
    """The paper's scalar per pair: the mean of the first ``k`` diagonal entries (averaged over
    heads)."""
    return {name: float(np.mean(diagonal_mean(A, k))) for name, A in matrices.items()}


@dataclass
class ArchitectureRun:
    """What :func:`train_architecture` returns.

    ``record`` (spectra every ``track_every`` steps), ``history`` (``step``,
    ``train_loss`` = mean minibatch loss since the previous evaluation,
    ``test_loss``), ``pruning`` (:meth:`ArchitectureConfig.pruning_losses`), ``alignment``
    (``{"start": ..., "end": ...}`` of :func:`alignment_matrices`), ``seconds`` of wall time.
    """

    config: ArchitectureConfig
    model: nn.Module
    record: RunRecord
    history: dict[str, np.ndarray]
    pruning: dict[str, float]
    alignment: dict[str, dict[str, np.ndarray]]
    seconds: float
    data: object = field(default=None, repr=False)

    @property
    def mean_rank(self) -> np.ndarray:
        """NormEffRank averaged over all matrices, ``(T,)`` at the record's steps."""
        return self.record.norm_eff_rank().mean(axis=1)

    def __repr__(self) -> str:
        r, p = self.mean_rank, self.pruning
        return (
            f"ArchitectureRun({self.config.kind}, {self.config.steps} steps in {self.seconds:.1f} "
            "s: "
            f"mean NormEffRank {r[0]:.3f} -> {r[-1]:.3f}; held-out loss {p['full']:.3g}, "
            f"top half {p['top']:.3g}, bottom half {p['bottom']:.3g})"
        )


def train_architecture(
    config: ArchitectureConfig,
    data=None,
    *,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    until: int | None = None,
) -> ArchitectureRun:
    """Train the config's model with tracked spectra, then measure pruning and alignment.

    The loop: for each step, set the learning rate, compute ``config.loss`` on
    ``config.batch``, back-propagate, clip, step; every ``eval_every`` steps
    the held-out loss, every ``track_every`` a snapshot of every matrix (with
    the model's ``layer_pairs()``). ``out`` saves the record, whose metadata
    also carries the history, the pruning losses and the alignment summaries,
    and a checkpoint beside it (:func:`~spectral_lab.experiments.grokking.checkpoint_path`:
    model, optimizer, torch's RNG, the batch generator's state, the step and the config) every
    ``checkpoint_every`` steps and at the end. ``resume=True`` continues from those files; on the
    CPU the result is identical to a run that was never interrupted.

    ``until`` trains only the first ``until`` steps, on the schedule of the whole run (warm-up
    and cosine decay over ``config.steps``), and measures pruning and alignment there: the first
    steps of the full run exactly, which a config with fewer ``steps`` is not (the staleness check
    of the shipped records, :mod:`spectral_lab.experiments.shipped`). The record's metadata also
    holds ``alignment_top``, the entry ``A_11`` of every alignment matrix (one per head).
    """
    stop = config.steps if until is None else until
    if not 0 < stop <= config.steps or (until is not None and (out is not None or resume)):
        raise ValueError(
            f"until must lie in [1, steps={config.steps}] and cannot be combined with out= or "
            f"resume= (a shortened run is not saved), got until={until}"
        )
    began = time.perf_counter()
    device = get_device(config.device)
    data = (config.make_data() if data is None else data).to(device)
    seed_everything(config.seed)
    model = config.make_model(data).to(device)
    optimizer = config.make_optimizer(model)
    generator = torch.Generator().manual_seed(config.data_seed)
    fields = ("step", "train_loss", "test_loss")
    out = None if out is None else Path(out)
    if resume:
        if out is None:
            raise ValueError("resume=True needs out= (the record to continue)")
        record, state = _resume(config, out, model, optimizer, device)
        start = int(state["step"])
        generator.set_state(state["generator"])
        window = [float(v) for v in state["window"].tolist()]
        aligned = {"start": {k: v.numpy() for k, v in state["alignment_start"].items()}}
        history = History(fields, record.meta.get("history")).until(start)
        tracker = config_tracker(model, config, record=record)
    else:
        start, window = 0, []
        tracker = config_tracker(model, config)
        history = History(fields)
        aligned = {"start": alignment_matrices(model, config.top_k)}
    record = stamp(tracker.record, config, device, model=config.kind)

    def observe(step: int, train_loss: float) -> None:
        test_loss = config.heldout_loss(model, data)
        history.add(step, {"train_loss": train_loss, "test_loss": test_loss})
        if tracker.due(step) or step == config.steps:
            tracker.step(step, model, force=True, train_loss=train_loss, test_loss=test_loss)
        window.clear()

    def save(step: int) -> None:
        """Record first, then checkpoint: a record is never older than the checkpoint beside it."""
        record.meta["history"] = history.lists()
        written(out, lambda: record.save(out))
        save_checkpoint(
            checkpoint_path(out),
            config,
            step,
            model,
            optimizer,
            generator=generator.get_state(),
            window=torch.tensor(window, dtype=torch.float64),
            alignment_start={k: torch.from_numpy(v) for k, v in aligned["start"].items()},
        )

    model.train()
    bar = progress_bar(progress, config.steps, start, desc=f"{config.kind} {config.preset}")
    try:
        for step in range(start, stop):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            loss = config.loss(model, config.batch(data, step, generator))
            if step == 0:
                observe(0, loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            window.append(loss.item())
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                observe(step + 1, float(np.mean(window)))
            bar.update(1)
            done = step + 1
            if out is not None and done < config.steps and done % config.checkpoint_every == 0:
                save(done)
    finally:
        bar.close()
    aligned["end"] = alignment_matrices(model, config.top_k)
    pruning = config.pruning_losses(model, data)
    record.meta.update(
        history=history.lists(),
        pruning=pruning,
        alignment={when: alignment_summary(m, config.top_k) for when, m in aligned.items()},
        alignment_top={
            when: {name: np.ravel(A[..., 0, 0]).tolist() for name, A in matrices.items()}
            for when, matrices in aligned.items()
        },
    )
    if out is not None:
        save(config.steps)
    return ArchitectureRun(
        config,
        model,
        record,
        history.arrays(),
        pruning,
        aligned,
        time.perf_counter() - began,
        data,
    )


@dataclass(frozen=True)
class ChapterRuns:
    """The chapter's four runs, one per kind of :data:`CONFIGS`, at one preset and one seed.

    What the book ships of the chapter (:mod:`spectral_lab.experiments.shipped`): its ``asdict``
    holds every kind's whole config, so the shipped records go stale when any kind's preset
    changes. ``seed`` is every run's (it draws the initialisation; the minibatch order and the
    data stay those of ``data_seed`` and ``corpus_seed``).
    """

    preset: str
    runs: dict[str, ArchitectureConfig]
    seed: int = 0

    def __post_init__(self) -> None:
        seeds = {kind: config.seed for kind, config in self.runs.items()}
        if set(self.runs) != set(CONFIGS) or set(seeds.values()) != {self.seed}:
            raise ValueError(
                f"ChapterRuns needs one config of each kind ({', '.join(CONFIGS)}), all of seed "
                f"{self.seed}; got seeds {seeds}: make it with ChapterRuns.from_preset(name)"
                ".with_overrides(seed=...)"
            )

    @classmethod
    def from_preset(cls, name: str) -> ChapterRuns:
        """Every kind's preset ``name`` (``quick`` or ``full``), seed 0."""
        return cls(name, {kind: config.from_preset(name) for kind, config in CONFIGS.items()})

    def with_overrides(self, *, seed: int | None = None) -> ChapterRuns:
        """A copy with another ``seed`` (every run's)."""
        seed = self.seed if seed is None else seed
        runs = {kind: config.with_overrides(seed=seed) for kind, config in self.runs.items()}
        return replace(self, runs=runs, seed=seed)

    @property
    def device(self) -> str:
        return self.runs["convnet"].device

    def train(
        self, kinds=None, progress: bool | None = False, until: int | None = None
    ) -> dict[str, ArchitectureRun]:
        """The runs of ``kinds`` (default: all four), in the chapter's order, each on its data;
        ``until`` trains only their first steps, on the whole schedule (:func:`train_architecture`).
        """
        kinds = list(self.runs) if kinds is None else list(kinds)
        unknown = sorted(set(kinds) - set(self.runs))
        if unknown:
            raise ValueError(f"no kind {unknown}; the kinds are {', '.join(self.runs)}")
        return {
            kind: train_architecture(config, progress=progress, until=until)
            for kind, config in self.runs.items()
            if kind in kinds
        }


def _resume(config: ArchitectureConfig, out: Path, model: nn.Module, optimizer, device):
    """The record at ``out`` cut back to its checkpoint, and the checkpoint (loaded into ``model``
    and ``optimizer``); refuses files of another kind, config or model."""
    ckpt = checkpoint_path(out)
    missing = [str(p) for p in (out, ckpt) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"cannot resume: {' and '.join(missing)} not found; a resumable run leaves both the "
            f"record and {ckpt.name} beside it. Start the run without resume (or --resume) instead"
        )
    record = RunRecord.load(out)
    check_record(record, config, out, model=config.kind)
    state = load_checkpoint(ckpt, config, model, optimizer, device)
    if not {"generator", "window", "alignment_start"} <= set(state):
        raise ValueError(
            f"cannot resume from {ckpt}: not an architecture run's checkpoint; delete {ckpt} to "
            "start over, or point --out elsewhere"
        )
    step = int(state["step"])
    record.truncate(step)
    expected = step if step == config.steps else step - step % config.track_every
    if len(record) == 0 or int(record.steps[-1]) != expected:
        raise ValueError(
            f"cannot resume {out}: the record ends at step {record.steps[-1:]} but the checkpoint "
            f"is at step {step}; the two files are from different runs"
        )
    return record, state


# ---- the command line: python -m spectral_lab run arch_unet --preset full --out runs/unet.npz ---
def _cli_run(
    config: ArchitectureConfig, out, resume: bool = False, progress: bool | None = None
) -> RunRecord:
    return train_architecture(config, out=out, resume=resume, progress=progress).record


def _outputs(config: ArchitectureConfig, out) -> list[Path]:
    return [Path(out), checkpoint_path(out)]


#: One command-line experiment per kind: ``arch_convnet``, ``arch_lstm``, ...
EXPERIMENTS: dict[str, Experiment] = {
    f"arch_{kind}": Experiment(
        cls,
        _cli_run,
        _outputs,
        ".npz",
        "the run record (.npz), with pruning losses in its metadata; its checkpoint goes beside it "
        "(.ckpt.pt)",
    )
    for kind, cls in CONFIGS.items()
}
