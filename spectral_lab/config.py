"""What every experiment's config shares: typed, checked, plain data with named presets.

A chapter's config is a frozen ``@dataclass`` subclass of :class:`ExperimentConfig`
with a ``preset`` field, its presets (``quick()`` for a 2-core CPU, ``full()``
for the paper's scale on a GPU) and the methods that make its run
(:class:`Recipe`). The base class gives every config the same behaviour:

* values are coerced to the declared types (strings from the command line,
  numpy scalars from arrays) and checked when the config is made, so a typo
  fails before any training; simple rules are declared, not written out:
  ``positive``, ``non_negative``, ``choices`` and ``multiple_of``;
* ``dataclasses.asdict(config)`` is what a run record stores, and
  :meth:`ExperimentConfig.from_dict` reads it back;
* :meth:`ExperimentConfig.with_overrides` changes fields; a changed science
  field makes the preset ``"custom"``, so a run that is not the quick preset is
  never labelled ``quick``.

:class:`Experiment` is one entry of the command line's registry
(:data:`spectral_lab.experiments.EXPERIMENTS`).
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Protocol

import numpy as np

__all__ = [
    "ExperimentConfig",
    "Experiment",
    "Recipe",
    "OBSERVATION_FIELDS",
    "SEED_FIELDS",
    "coerce_value",
]

#: Fields that say how a run was observed or where it ran, not what was trained:
#: two configs that differ only here describe the same training run.
OBSERVATION_FIELDS = (
    "device",
    "eval_every",
    "track_every",
    "checkpoint_every",
    "top_k",
    "track_pruning",
)

#: Fields that choose a random draw of the same setting: changing one keeps the preset's name
#: (seed 3 of the quick preset is still a quick run).
SEED_FIELDS = ("seed", "data_seed", "label_seed", "corpus_seed", "eval_seed", "brain_seed")


def coerce_value(name: str, kind: Any, value: Any) -> Any:
    """``value`` as the type ``kind`` of field ``name``: int, float, bool, str or number tuple.

    Strings are parsed (``"1e-3"``, ``"true"``, ``"0,0.1,1"``) and numpy scalars
    accepted (``np.int64(1)`` for an int, ``np.float32(0.5)`` for a float), so the
    command line, arrays and the constructor share one set of rules. Raises
    ``ValueError`` naming the field and the expected type.
    """

    def fail(expected: str):
        raise ValueError(f"{name} must be {expected}, got {value!r}")

    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        value = value.item()  # numpy scalar -> the Python int, float or bool it holds
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        if text in ("true", "1", "yes", "false", "0", "no"):
            return text in ("true", "1", "yes")
        fail("true or false")
    if kind is int:
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                fail("an integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e3 from a float array
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return int(value)
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                fail("a number")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            fail("a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            fail("a non-empty string")
        return value.strip()
    if typing.get_origin(kind) is tuple:
        if isinstance(value, (tuple, list)) and not value:
            return ()  # an empty tuple from code: "not given" where a field allows it
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            fail("a comma-separated list of numbers")
        items = [item for item in items if not (isinstance(item, str) and not item.strip())]
        if not items:
            fail("a non-empty comma-separated list of numbers")
        element = (typing.get_args(kind) or (float,))[0]
        return tuple(coerce_value(name, element, item) for item in items)
    raise TypeError(f"field {name} has a type ({kind}) that configs do not support")


def _declared(cls: type, attribute: str) -> dict | tuple:
    """A validation declaration merged over the class hierarchy (subclasses add to their bases)."""
    merged: dict = {}
    for klass in reversed(cls.__mro__):
        value = klass.__dict__.get(attribute)
        if isinstance(value, dict):
            merged.update(value)
        elif value:
            merged.update(dict.fromkeys(value))
    return merged


class ExperimentConfig:
    """What every experiment config shares: presets by name, checked values, plain-dict round trip.

    A subclass is a frozen ``@dataclass`` with a ``preset`` field and a
    ``presets()`` classmethod. ``__post_init__`` coerces every field to its
    declared type, checks the declared rules, and then calls :meth:`validate`
    for whatever the rules cannot say. The rules are class attributes, each
    merged with those of the base classes:

    * ``positive``: fields that must be >= 1 (integers) or > 0 (numbers);
    * ``non_negative``: fields that must be >= 0;
    * ``choices``: ``{field: allowed values}``;
    * ``multiple_of``: ``{field: other field}``, e.g. snapshots only at evaluation steps.
    """

    experiment: ClassVar[str] = ""
    positive: ClassVar[tuple[str, ...]] = ()
    non_negative: ClassVar[tuple[str, ...]] = tuple(SEED_FIELDS)
    choices: ClassVar[dict[str, tuple]] = {}
    multiple_of: ClassVar[dict[str, str]] = {}
    #: Fields added after records were first written: while one holds its default it is left out
    #: of a sweep store's key (:func:`spectral_lab.sweeps.config_key`), so older stores still match.
    added_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        types = typing.get_type_hints(type(self))
        for f in fields(self):  # frozen dataclass: set the coerced value behind the freeze, once
            value = coerce_value(f.name, types[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self._check_declared()
        self.validate()

    def _check_declared(self) -> None:
        names = {f.name for f in fields(self)}
        for name in _declared(type(self), "positive"):
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if any(v <= 0 for v in values):
                kind = "integer" if isinstance(values[0], int) else "number"
                raise ValueError(f"{name} must be a positive {kind}, got {value}")
        for name in _declared(type(self), "non_negative"):
            value = getattr(self, name) if name in names else 0
            if any(v < 0 for v in (value if isinstance(value, tuple) else (value,))):
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, allowed in _declared(type(self), "choices").items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(map(str, allowed))}, "
                    f"got {getattr(self, name)!r}"
                )
        for name, base in _declared(type(self), "multiple_of").items():
            if getattr(self, name) % getattr(self, base):
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of "
                    f"{base}={getattr(self, base)}, so that every snapshot carries the "
                    "losses and accuracies measured at its own step"
                )

    def validate(self) -> None:
        """Raise ``ValueError`` for values the declared rules cannot catch; subclasses extend it."""

    @classmethod
    def presets(cls) -> dict[str, Callable[[], ExperimentConfig]]:
        """Preset name -> constructor. The base class has none; each experiment lists its own."""
        return {}

    @classmethod
    def from_preset(cls, name: str) -> ExperimentConfig:
        """The preset called ``name``; an unknown name raises ``ValueError`` listing the presets."""
        presets = cls.presets()
        if name not in presets:
            raise ValueError(
                f"unknown preset {name!r} for {cls.__name__}; presets: {', '.join(presets)}"
            )
        return presets[name]()

    def with_overrides(self, **overrides) -> ExperimentConfig:
        """A copy with some fields changed (strings are parsed); unknown names raise ``ValueError``.

        The copy keeps the preset's name when only seeds (:data:`SEED_FIELDS`) or
        observation fields (:data:`OBSERVATION_FIELDS`) change; any other change
        makes it ``"custom"``, so a custom run is never labelled as a preset.
        ``preset`` itself cannot be overridden: choose the preset, then override.
        """
        known = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no field {', '.join(map(repr, unknown))}; "
                f"fields: {', '.join(known)}"
            )
        if "preset" in overrides:
            raise ValueError(
                "preset names a set of values and cannot be overridden: start from that preset "
                f"instead ({type(self).__name__}.from_preset(name), or --preset NAME)"
            )
        changed = replace(self, **overrides)
        keeps_name = set(OBSERVATION_FIELDS) | set(SEED_FIELDS)
        science = [name for name in changed.differences(self) if name not in keeps_name]
        if science and self.preset != "custom":
            changed = replace(changed, preset="custom")
        return changed

    @classmethod
    def from_dict(cls, values: dict) -> ExperimentConfig:
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
        self, other: dict | ExperimentConfig, ignore=OBSERVATION_FIELDS
    ) -> dict[str, tuple]:
        """Fields that differ from ``other`` (a config or its ``asdict``).

        Returns ``{name: (mine, theirs)}``. A field that ``other`` lacks because it
        was added later (:attr:`added_fields`) counts as holding its default.
        """
        theirs = asdict(other) if isinstance(other, ExperimentConfig) else dict(other)
        mine = asdict(self)
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        for name in self.added_fields:
            theirs.setdefault(name, defaults.get(name))
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


class Recipe(Protocol):
    """What a training loop asks of a config: the data, a fresh model and its optimizer."""

    seed: int
    device: str

    def make_data(self) -> Any: ...

    def make_model(self, *args) -> Any: ...

    def make_optimizer(self, model) -> Any: ...


class Experiment(NamedTuple):
    """An entry of :data:`spectral_lab.experiments.EXPERIMENTS` (``python -m spectral_lab``).

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
