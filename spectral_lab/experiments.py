"""One dataclass per experiment, with named presets, and the registry the command line reads.

* :class:`GrokkingConfig` - modular addition with AdamW, full batch (SPEC section 2,
  "Grokking"). ``GrokkingConfig()`` is the paper's setting; presets:
  ``quick()`` / ``quick_no_wd()`` for a 2-core CPU, ``full()`` / ``full_no_wd()`` /
  ``full_more_data()`` for the paper's three rows on a GPU.
* :class:`WeightDecaySweep` - the same run at several weight decays (SPEC
  section 2, "Weight decay"); ``configs()`` gives one :class:`GrokkingConfig` each.
* :data:`EXPERIMENTS` - experiment name -> (config class, run function), for
  ``python -m spectral_lab run NAME``. A new experiment is one more entry; experiments
  built on the SGD loop (which imports this module) register themselves in their own
  module, e.g. :mod:`spectral_lab.memorization`.

A config is plain data: ``dataclasses.asdict(config)`` is what a run record
stores, and :meth:`ExperimentConfig.from_dict` reads it back. Values are
checked when the config is made, so a typo fails before any training.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple

import torch

from .data import ModularData, modular_addition
from .models import ModularMLP, ModularTransformer

__all__ = [
    "ExperimentConfig",
    "GrokkingConfig",
    "WeightDecaySweep",
    "Experiment",
    "EXPERIMENTS",
    "OBSERVATION_FIELDS",
    "coerce_value",
]

MODELS = ("transformer", "mlp")

#: Fields that say how a run was observed or where it ran, not what was trained:
#: two configs that differ only here describe the same training run.
OBSERVATION_FIELDS = ("device", "eval_every", "track_every", "checkpoint_every", "top_k")


def coerce_value(name: str, kind: Any, value: Any) -> Any:
    """``value`` as the type ``kind`` of field ``name`` (int, float, bool, str, tuple[float | int,
    ...]).

    Strings are parsed (``"1e-3"``, ``"true"``, ``"0,0.1,1"``), so the command
    line and the constructor share one set of rules. Raises ``ValueError``
    naming the field and the expected type.
    """

    def fail(expected: str):
        raise ValueError(f"{name} must be {expected}, got {value!r}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "1",
            "yes",
            "false",
            "0",
            "no",
        ):
            return value.strip().lower() in ("true", "1", "yes")
        fail("true or false")
    if kind is int:
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                fail("an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return int(value)
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                fail("a number")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            fail("a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            fail("a non-empty string")
        return value.strip()
    if typing.get_origin(kind) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            fail("a comma-separated list of numbers")
        items = [item for item in items if not (isinstance(item, str) and not item.strip())]
        if not items:
            fail("a non-empty comma-separated list of numbers")
        element = (typing.get_args(kind) or (float,))[0]
        return tuple(coerce_value(name, element, item) for item in items)
    raise TypeError(f"field {name} has a type ({kind}) that configs do not support")


class ExperimentConfig:
    """What every experiment config shares: presets by name, checked values, plain-dict round trip.

    A subclass is a ``@dataclass`` with a ``preset`` field and a ``presets()``
    classmethod; ``__post_init__`` coerces every field to its declared type
    and then calls :meth:`validate`.
    """

    experiment: ClassVar[str] = ""

    def __post_init__(self) -> None:
        types = typing.get_type_hints(type(self))
        for f in fields(self):  # frozen dataclass: set the coerced value behind the freeze, once
            object.__setattr__(
                self, f.name, coerce_value(f.name, types[f.name], getattr(self, f.name))
            )
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for values that cannot make a run; subclasses extend it."""

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "ExperimentConfig"]]:
        """Preset name -> constructor. The base class has none; each experiment lists its own."""
        return {}

    @classmethod
    def from_preset(cls, name: str) -> "ExperimentConfig":
        """The preset called ``name``; an unknown name raises ``ValueError`` listing the presets."""
        presets = cls.presets()
        if name not in presets:
            raise ValueError(
                f"unknown preset {name!r} for {cls.__name__}; presets: {', '.join(presets)}"
            )
        return presets[name]()

    def with_overrides(self, **overrides) -> "ExperimentConfig":
        """A copy with some fields changed (strings are parsed); unknown names raise
        ``ValueError``."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no field {', '.join(map(repr, unknown))}; "
                f"fields: {', '.join(known)}"
            )
        return replace(self, **overrides)

    @classmethod
    def from_dict(cls, values: dict) -> "ExperimentConfig":
        """The config whose ``asdict`` is ``values`` (as stored in a run record's metadata)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}")
        return cls(**values)

    @property
    def scale(self) -> str:
        """``"quick"`` or ``"full"`` for the presets of that scale, ``"custom"`` otherwise."""
        head = self.preset.replace("/", "_").split("_")[0]  # "full_no_wd", "quick/wd=1"
        return head if head in ("quick", "full") else "custom"

    def differences(
        self, other: dict | "ExperimentConfig", ignore=OBSERVATION_FIELDS
    ) -> dict[str, tuple]:
        """Fields that differ from ``other`` (a config or its ``asdict``): ``{name: (mine,
        theirs)}``."""
        theirs = asdict(other) if isinstance(other, ExperimentConfig) else dict(other)
        mine = asdict(self)
        out = {}
        for name in sorted(set(mine) | set(theirs)):
            if name in ignore:
                continue
            a, b = mine.get(name), theirs.get(name)
            if isinstance(a, tuple):
                a = list(a)
            if isinstance(b, tuple):
                b = list(b)
            if a != b:
                out[name] = (mine.get(name), theirs.get(name))
        return out


@dataclass(frozen=True)
class _ModularSetup(ExperimentConfig):
    """Model, data, optimizer and cadence shared by the grokking runs and the weight-decay sweep.

    Defaults are the paper's setting: p=113, 30 % of the pairs for training,
    a one-layer transformer (d_model 128, 4 heads, MLP 512), AdamW lr 1e-3,
    betas (0.9, 0.98), full batch, 40k steps. For ``model="mlp"``, ``d_model``
    is the embedding width, ``d_mlp`` the hidden width, and ``n_heads`` unused.
    """

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
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        for name in (
            "p",
            "d_model",
            "n_heads",
            "d_mlp",
            "steps",
            "eval_every",
            "track_every",
            "checkpoint_every",
            "top_k",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.p < 2:
            raise ValueError(f"p must be at least 2, got {self.p}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(
                f"train_fraction must lie strictly between 0 and 1, got {self.train_fraction}"
            )
        if self.model == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.track_every % self.eval_every:
            raise ValueError(
                f"track_every={self.track_every} must be a multiple of "
                f"eval_every={self.eval_every}, so that "
                "every snapshot carries losses and accuracies measured at its own step"
            )
        if not 0.0 < self.prune_fraction < 1.0:
            raise ValueError(
                f"prune_fraction must lie strictly between 0 and 1, got {self.prune_fraction}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")

    # ---- what a run is made of (called by spectral_lab.training.train) ---------------------------
    def make_data(self) -> ModularData:
        """The train / validation split of ``(a + b) mod p`` for this config's seed."""
        return modular_addition(self.p, self.train_fraction, self.seed)

    def make_model(self) -> torch.nn.Module:
        """A freshly initialised model (seed torch first for a reproducible initialisation)."""
        if self.model == "transformer":
            return ModularTransformer(self.p, self.d_model, self.n_heads, self.d_mlp)
        return ModularMLP(self.p, self.d_model, self.d_mlp)


@dataclass(frozen=True)
class GrokkingConfig(_ModularSetup):
    """One grokking run: :class:`_ModularSetup` plus its AdamW ``weight_decay``.

    ``GrokkingConfig()`` is the paper's main row (wd 1). Presets:
    ``quick`` / ``quick_no_wd`` / ``quick_more_data`` (a 2-core CPU, under a minute each) and
    ``full`` / ``full_no_wd`` / ``full_more_data`` (the paper's rows: wd 1,
    wd 0, and 90 % data with wd 0; a GPU).
    """

    experiment: ClassVar[str] = "grokking"
    weight_decay: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

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
    def quick(cls) -> "GrokkingConfig":
        """Groks on a 2-core CPU in under 20 s: the same transformer at d 64, MLP 256, p=43, half
        the pairs,
        lr 5e-3, wd 1, 1,500 steps."""
        return cls(preset="quick", **_QUICK)

    @classmethod
    def quick_no_wd(cls) -> "GrokkingConfig":
        """``quick()`` without weight decay: the control that does not generalize in the same
        budget."""
        return cls(preset="quick_no_wd", **dict(_QUICK, weight_decay=0.0))

    @classmethod
    def quick_more_data(cls) -> "GrokkingConfig":
        """``quick()`` with 90 % of the pairs and no weight decay, 1,000 steps: generalizes without
        weight
        decay, at a larger norm than ``quick()`` (the quick stand-in for ``full_more_data``)."""
        return cls(
            preset="quick_more_data",
            **dict(_QUICK, train_fraction=0.9, weight_decay=0.0, steps=1000),
        )

    @classmethod
    def full(cls) -> "GrokkingConfig":
        """The paper: p=113, 30 % data, d 128, 4 heads, MLP 512, AdamW 1e-3, wd 1, 40k full-batch
        steps."""
        return cls(preset="full")

    @classmethod
    def full_no_wd(cls) -> "GrokkingConfig":
        """The paper's row without weight decay: no grokking and no low rank in 40k steps."""
        return cls(preset="full_no_wd", weight_decay=0.0)

    @classmethod
    def full_more_data(cls) -> "GrokkingConfig":
        """The paper's row with 90 % of the pairs and no weight decay: low rank early, a much larger
        norm."""
        return cls(preset="full_more_data", train_fraction=0.9, weight_decay=0.0)

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "GrokkingConfig"]]:
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
_QUICK = dict(
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


@dataclass(frozen=True)
class WeightDecaySweep(_ModularSetup):
    """The same run at each of ``weight_decays``: :meth:`configs` gives one :class:`GrokkingConfig`
    each."""

    experiment: ClassVar[str] = "weight_decay"
    weight_decays: tuple[float, ...] = PAPER_WEIGHT_DECAYS

    def validate(self) -> None:
        super().validate()
        if any(wd < 0 for wd in self.weight_decays):
            raise ValueError(f"weight decays must be >= 0, got {self.weight_decays}")
        if len(set(self.weight_decays)) != len(self.weight_decays):
            raise ValueError(f"weight decays must be distinct, got {self.weight_decays}")

    def configs(self) -> list[GrokkingConfig]:
        """One grokking config per weight decay, in the sweep's order, named
        ``"<preset>/wd=<wd>"``."""
        shared = {f.name: getattr(self, f.name) for f in fields(_ModularSetup)}
        return [
            GrokkingConfig(**dict(shared, preset=f"{self.preset}/wd={wd:g}", weight_decay=wd))
            for wd in self.weight_decays
        ]

    @classmethod
    def quick(cls) -> "WeightDecaySweep":
        """Six weight decays from 0 to 3 on the quick grokking setting (1,200 steps): 65-95 s on 2
        cores."""
        return cls(preset="quick", **_QUICK_SWEEP)

    @classmethod
    def full(cls) -> "WeightDecaySweep":
        """The paper's weight decays {0, 1e-4, 1e-3, 1e-2, 0.1, 1, 10} on the paper's grokking
        setting."""
        return cls(preset="full")

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "WeightDecaySweep"]]:
        return {"quick": cls.quick, "full": cls.full}


#: The quick sweep: the quick grokking setting for 1,200 steps, snapshots every 100 (a sweep reads
#: final values; time to generalize comes from the evaluations every 25). Measured on 2 cores: six
#: runs in 65-95 s (the 1,500-step runs took 105-118 s, too close to the chapter's two minutes).
_QUICK_SWEEP = dict(
    {k: v for k, v in _QUICK.items() if k != "weight_decay"},
    steps=1200,
    track_every=100,
    weight_decays=(0.0, 1e-3, 1e-2, 0.1, 1.0, 3.0),
)


class Experiment(NamedTuple):
    """An entry of :data:`EXPERIMENTS`.

    ``run(config, out, resume=False, progress=None)`` trains and returns the
    record(s); ``outputs(config, out)`` lists the files it writes; ``suffix`` is
    appended to the default output name (``".npz"`` for a record, ``""`` for a
    folder); ``out_help`` says what ``--out`` is. An experiment made of
    independent runs also has ``sweep(config, out, progress=None, engine=...,
    **engine_options)``: the same, through :func:`spectral_lab.sweep` on any
    engine, always keeping what is already in ``out``
    (``python -m spectral_lab sweep NAME``).
    """

    config_class: type
    run: Callable
    outputs: Callable[[Any, Path], list[Path]]
    suffix: str
    out_help: str
    sweep: Callable | None = None


def _run_grokking(config, out, resume=False, progress=None):
    from .training import train

    return train(config, out=out, resume=resume, progress=progress).record


def _grokking_outputs(config, out) -> list[Path]:
    from .training import checkpoint_path

    return [Path(out), checkpoint_path(out)]


def _run_weight_decay(config, out, resume=False, progress=None):
    from .sweeps import run_weight_decay_sweep

    return run_weight_decay_sweep(config, out=out, resume=resume, progress=progress)


def _sweep_weight_decay(config, out, progress=None, **engine):
    from .sweeps import run_weight_decay_sweep

    return run_weight_decay_sweep(config, out=out, resume=True, progress=progress, **engine)


def _weight_decay_outputs(config, out) -> list[Path]:
    from .sweeps import sweep_outputs

    return sweep_outputs(config, out)


#: ``python -m spectral_lab run NAME`` looks NAME up here; a new experiment is one more line.
EXPERIMENTS: dict[str, Experiment] = {
    "grokking": Experiment(
        GrokkingConfig,
        _run_grokking,
        _grokking_outputs,
        ".npz",
        "the run record (.npz); its checkpoint goes beside it (.ckpt.pt)",
    ),
    "weight_decay": Experiment(
        WeightDecaySweep,
        _run_weight_decay,
        _weight_decay_outputs,
        "",
        "a folder with one record per weight decay (checkpoints in partial/ while running)",
        _sweep_weight_decay,
    ),
}
