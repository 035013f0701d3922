"""Run records shipped with the book: the other seeds a chapter shows beside the run it trains.

A chapter trains seed 0 in place, from its visible loop, and reads seeds 1-4 of the same
setting from ``records/`` in the repository, so that every headline figure shows the spread over
seeds without the build training five times as much. What is shipped is declared here,
:data:`SHIPMENTS`; ``records/manifest.json`` says, for every file, the experiment, preset, seed,
full config, the command that regenerates it, the package and torch versions, the device, the
scale, its sha256 and size.

Three ways a chapter could show something false are closed:

- a file that is missing or corrupt (its sha256 differs from the manifest's) is an error that names
  the command that regenerates it;
- a record of another setting than the code's preset is an error (:func:`load` compares the
  manifest's config with the preset's), so a changed preset never shows old runs;
- a record that the code no longer reproduces is caught by :func:`prefix_mismatch`: it trains the
  first steps again and compares them with the shipped record at a tolerance that floating-point
  rounding passes (another thread count, another processor) and a change of the science fails
  (``tests/test_shipped.py`` shows both). Only the first steps: these trainings are chaotic, and the
  same seed lands visibly elsewhere on another processor by the end.

Outside a checkout of the repository (``pip install`` from the home, as in Colab) there is no
``records/`` folder; :func:`load` then trains the runs in place and says so.

Regenerate with ``python -m spectral_lab records regenerate [NAME ...] [--seeds 0-4]``; check with
``python -m spectral_lab records check``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from ..record import RunRecord, plain_config
from ..runtime import get_device
from ..sweeps import load_result, save_result
from ..version import __version__
from . import architectures, classifier, connectivity, grokking, lottery, memorization, weight_decay

__all__ = [
    "RECORDS",
    "SHIPMENTS",
    "Shipment",
    "ShippedRecordError",
    "load",
    "prefix_mismatch",
    "regenerate",
]

#: The shipped records, in the repository beside the book (absent in a plain ``pip install``).
RECORDS = Path(
    os.environ.get("SPECTRAL_LAB_RECORDS", Path(__file__).resolve().parents[2] / "records")
)
MANIFEST_NAME = "manifest.json"
#: A shipped file is a :class:`RunRecord` or an experiment's plain result (a dataclass marked
#: ``@storable``, written by :func:`spectral_lab.sweeps.save_result`): keyed by "is a record".
FORMATS = {True: "run_record", False: "result"}

#: Relative tolerance of :func:`prefix_mismatch`, in units of each layer's top singular value.
#: Rounding (another thread count) moves the first snapshots by about 1e-6 of s_1; a learning
#: rate changed by 2 % moves them by more than 1e-2.
PREFIX_TOLERANCE = 1e-3
#: The same check for a record trained on another kind of device (a GPU's record checked on a
#: CPU): the initialisation within 1e-4 of s_1 (the float32 SVDs of the two devices; measured
#: 2e-5 for grokking-full on an H200 against this CPU), later snapshots within 5e-2 (measured
#: 8.7e-3 after 100 steps: the devices' arithmetic drifts apart as training goes on). Weaker
#: than the same-device check: it catches a changed model, data, seed or initialisation, and
#: only a large change of the training loop.
ACROSS_DEVICES_TOLERANCE = {"initialisation": 1e-4, "later": 5e-2}


class ShippedRecordError(RuntimeError):
    """A shipped record is missing, corrupt or of another setting than the code's."""


@dataclass(frozen=True)
class Shipment:
    """What the book ships of one setting: ``seeds`` of ``preset`` of ``experiment``.

    ``train(config)`` trains one seed and returns its records by label (``""`` for a single
    record; a label may also hold a plain ``@storable`` result, see :data:`FORMATS`).
    ``prefix`` is how many of the first steps :func:`prefix_mismatch` trains again (the
    setting's learning-rate schedule is constant, so a shortened run follows the full one step
    for step), and ``length`` the config field that counts the run's length. Where the schedule
    depends on the run's length, ``train_prefix(config, prefix)`` trains the first ``prefix``
    ``length`` units of the full run instead and returns the records it can compare, by label.
    """

    name: str
    experiment: str
    config_class: type
    preset: str
    seeds: tuple[int, ...]
    train: Callable[[object], dict[str, RunRecord]]
    length: str
    prefix: int
    settings: dict = field(default_factory=dict)
    train_prefix: Callable[[object, int], dict[str, RunRecord]] | None = None

    def config(self, seed: int):
        """The config of ``seed``: the preset with the shipment's settings and that seed (through
        the config's ``with_seed`` where it has one: an experiment with more than one seed field
        redraws all of them)."""
        config = self.config_class.from_preset(self.preset)
        if hasattr(config, "with_seed"):
            return (config.with_overrides(**self.settings) if self.settings else config).with_seed(
                seed
            )
        return config.with_overrides(**self.settings, seed=seed)

    def file(self, seed: int, label: str) -> str:
        """The record's path under ``records/``."""
        return f"{self.name}/seed{seed}{'-' + label if label else ''}.npz"

    def command(self, seed: int) -> str:
        return f"python -m spectral_lab records regenerate {self.name} --seeds {seed}"

    @property
    def scale(self) -> str:
        """``quick`` or ``full``: the scale of the preset the shipment starts from."""
        return self.preset.split("_")[0]


def _train_grokking(config) -> dict[str, RunRecord]:
    return {"": grokking.train(config, progress=False).record}


def _train_memorization(config) -> dict[str, RunRecord]:
    """The true-label and the random-label runs: what the chapter compares across seeds."""
    runs = memorization.run_memorization(config, fractions=(0.0, 1.0), progress=False)
    return {f"labels_{fraction:g}": record for fraction, record in runs.items()}


def _lottery_prefix(config, epochs: int) -> dict[str, RunRecord]:
    """The first ``epochs`` of the dense run (its cosine schedule spans the whole run, so a shorter
    config would not follow it): the start of what the tickets are rewound to."""
    data = config.make_data()
    stop = epochs * config.steps_per_epoch(len(data.train_y))
    return {"dense": classifier.fit(config, data=data, stop_step=stop, progress=False).record}


#: The prefix of the MNIST-1D runs (lottery, connectivity): 2 epochs, 250 steps. Rounding stays
#: near 1e-6 of s_1 up to step 375 and then grows to a few per cent by step 500 (measured with 2
#: threads against records made with 1), so a longer prefix would fail on another machine.
PREFIX_EPOCHS = 2

#: What of the LMC grid a shipped seed holds: the split pairs and the perturbed ones (the
#: different-initialisation control needs other trunks' endpoints, the one thing not shipped).
CONNECTIVITY_PARTS = ("split", "perturbed")


def _connectivity_trunk(config, epochs: int | None = None) -> dict[str, RunRecord]:
    """The trunk, tracked every 125 steps: up to the last split step (what is shipped), or its
    first ``epochs`` (what the staleness check trains again: the recipe every branch continues)."""
    recipe = dataclasses.replace(
        config.training_config(), seed=config.trunk_seeds[0], eval_every=125, track_every=125
    )  # measuring more often changes nothing in the training
    data = recipe.make_data()
    stop = config.split_steps[-1]
    if epochs is not None:
        stop = min(stop, epochs * recipe.steps_per_epoch(len(data.train_y)))
    return {"trunk": classifier.fit(recipe, data=data, stop_step=stop, progress=False).record}


def _train_connectivity(config) -> dict:
    """One trunk's grid (split and perturbed pairs) as a plain result, without the endpoints'
    weights (megabytes the chapter does not read), and the trunk as a record."""
    result = connectivity.run_connectivity(config, progress=False, parts=CONNECTIVITY_PARTS)
    pairs = [dataclasses.replace(pair, states=({}, {})) for pair in result.pairs]
    return {**_connectivity_trunk(config), "grid": dataclasses.replace(result, pairs=pairs)}


def _train_architectures(config) -> dict[str, RunRecord]:
    """The four kinds' runs of one seed (``ChapterRuns``), labelled by kind."""
    return {kind: run.record for kind, run in config.train().items()}


def _architectures_prefix(config, steps: int) -> dict[str, RunRecord]:
    """The first ``steps`` of each kind's run on its whole schedule (the warm-up and decay span
    the run), without the ConvNet: measured at step 50 of seed 2, two threads against one move
    its singular values by 2e-2 of s_1, as much as a learning rate 2 % higher does, so no
    tolerance tells rounding from a change of its science (the other three kinds move by about
    1e-6, and the LSTM's by 6e-3 with a learning rate 2 % higher). The ConvNet's records are
    checked by their config (:func:`load`)."""
    kinds = [kind for kind in config.runs if kind != "convnet"]
    return {kind: run.record for kind, run in config.train(kinds, until=steps).items()}


def _train_weight_decay(config) -> dict[str, RunRecord]:
    """Every run of a weight-decay sweep, labelled ``wd_<weight decay>``: the chapter reads each
    weight decay's final rank, norm, time to generalise and pruned losses across seeds."""
    records = weight_decay.run_weight_decay_sweep(config, progress=False)  # in configs()' order
    return {weight_decay.sweep_label(c): r for c, r in zip(config.configs(), records, strict=True)}


def _paper_grokking(preset: str, name: str | None = None, **settings) -> Shipment:
    return Shipment(
        name or f"grokking-{preset}", "grokking", grokking.GrokkingConfig, preset, (0,),
        _train_grokking, length="steps", prefix=100, settings=settings,
    )  # fmt: skip


#: Paper-scale runs, trained on a GPU by ``tools/gpu_check.py`` into ``records/`` when a GPU is
#: at hand; a chapter shows them beside its quick run where they exist (:func:`available`). In
#: the order of their value: the grokking chapter's three rows, then the weight-decay sweep.
PAPER_SHIPMENTS: dict[str, Shipment] = {
    shipment.name: shipment
    for shipment in (
        _paper_grokking("full"),
        _paper_grokking("full_no_wd"),
        _paper_grokking("full_more_data"),
        *(
            _paper_grokking("full", f"weight_decay-full-wd_{wd:g}", weight_decay=wd)
            for wd in weight_decay.PAPER_WEIGHT_DECAYS
            if wd not in (0.0, grokking.GrokkingConfig().weight_decay)  # grokking-full(_no_wd)
        ),
    )
}

#: Everything the book ships, by name (``records/<name>/``).
SHIPMENTS: dict[str, Shipment] = {
    shipment.name: shipment
    for shipment in (
        Shipment(
            "grokking-quick", "grokking", grokking.GrokkingConfig, "quick", (1, 2, 3, 4),
            _train_grokking, length="steps", prefix=100,
            settings={"top_k": 3},  # an observation setting: the same training, a third the bytes
        ),
        Shipment(
            "memorization-quick", "memorization", memorization.MemorizationConfig, "quick",
            (1, 2, 3, 4), _train_memorization, length="epochs", prefix=2,
        ),
        Shipment(
            "lottery-quick", "lottery", lottery.LotteryConfig, "quick", (1, 2, 3, 4),
            lottery.seed_records, length="epochs", prefix=PREFIX_EPOCHS,
            train_prefix=_lottery_prefix,
        ),
        Shipment(
            "connectivity-quick", "connectivity", connectivity.ConnectivityConfig, "quick", (1, 2),
            _train_connectivity, length="epochs", prefix=PREFIX_EPOCHS,
            train_prefix=_connectivity_trunk,
        ),
        Shipment(
            "architectures-quick", "architectures", architectures.ChapterRuns, "quick", (1, 2),
            _train_architectures, length="steps", prefix=50, train_prefix=_architectures_prefix,
        ),
        Shipment(
            "weight_decay-quick", "weight_decay", weight_decay.WeightDecaySweep, "quick", (1, 2),
            _train_weight_decay, length="steps", prefix=100,  # snapshots every 100 steps
            settings={"top_k": 3},  # as grokking-quick: the chapter reads no singular vectors
        ),
    )
}  # fmt: skip
SHIPMENTS.update(PAPER_SHIPMENTS)


def available(name: str, records: Path = RECORDS) -> list[int]:
    """The seeds of shipment ``name`` that ``records/`` holds (a paper-scale shipment exists only
    once a GPU has trained it)."""
    _shipment(name)
    entries = read_manifest(records)["records"].values() if records.is_dir() else []
    return sorted({e["seed"] for e in entries if e.get("shipment") == name})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(records: Path = RECORDS) -> dict:
    """``records/manifest.json``: ``{"records": {file: entry}}``."""
    path = records / MANIFEST_NAME
    if not path.exists():
        return {"records": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ShippedRecordError(
            f"{path} cannot be read ({error}); restore it with `git checkout -- {path}` or "
            "rebuild it with `python -m spectral_lab records regenerate`"
        ) from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("records"), dict):
        raise ShippedRecordError(f"{path} is not a manifest of shipped records")
    return manifest


def _shipment(name: str) -> Shipment:
    if name not in SHIPMENTS:
        raise ValueError(f"no shipment {name!r}; the book ships {', '.join(SHIPMENTS)}")
    return SHIPMENTS[name]


def _check_seeds(shipment: Shipment, seeds) -> list[int]:
    seeds = list(shipment.seeds if seeds is None else seeds)
    unknown = sorted(set(seeds) - set(shipment.seeds))
    if unknown:
        raise ValueError(
            f"{shipment.name} ships seeds {list(shipment.seeds)}, not {unknown}; "
            "add them to its Shipment in spectral_lab/experiments/shipped.py and regenerate"
        )
    return seeds


def load(name: str, seeds=None, records: Path = RECORDS) -> dict[int, dict[str, RunRecord | Any]]:
    """The shipped records of ``name`` (a key of :data:`SHIPMENTS`): ``{seed: {label: record}}``
    (a :class:`RunRecord`, or the experiment's plain result where the shipment ships one).

    Each file is checked against the manifest (present, same sha256) and its config against the
    code's (the preset with the shipment's settings and that seed); a failed check raises
    :class:`ShippedRecordError` naming the command that regenerates the file. Without a
    ``records/`` folder at all (an installed package, not a checkout) the runs are trained here,
    with a note.
    """
    shipment = _shipment(name)
    seeds = _check_seeds(shipment, seeds)
    if not records.is_dir():
        print(
            f"no shipped records at {records} (a checkout of the repository has them): "
            f"training {shipment.name} seeds {seeds} here"
        )
        return {seed: shipment.train(shipment.config(seed)) for seed in seeds}
    entries = read_manifest(records)["records"]
    loaded: dict[int, dict[str, RunRecord]] = {}
    for seed in seeds:
        config = shipment.config(seed)
        mine = {f: e for f, e in entries.items() if e.get("shipment") == name and e["seed"] == seed}
        if not mine:
            raise ShippedRecordError(
                f"the manifest lists no record of {name} seed {seed}: "
                f"run `{shipment.command(seed)}`"
            )
        loaded[seed] = {}
        for file, entry in sorted(mine.items()):
            path = records / file
            fix = f"run `{shipment.command(seed)}` (or `git checkout -- {path}`)"
            if not path.exists():
                raise ShippedRecordError(f"{path} is missing: {fix}")
            if _sha256(path) != entry["sha256"]:
                raise ShippedRecordError(
                    f"{path} differs from its manifest entry (corrupt?): {fix}"
                )
            if entry["config"] != _comparable(config):
                changed = sorted(
                    k for k in set(entry["config"]) | set(_comparable(config))
                    if entry["config"].get(k) != _comparable(config).get(k)
                )  # fmt: skip
                raise ShippedRecordError(
                    f"{path} was trained with other settings than the code's {shipment.preset!r} "
                    f"preset (differs in {', '.join(changed)}): the records are stale, "
                    f"run `{shipment.command(seed)}`"
                )
            fmt = entry.get("format", FORMATS[True])
            if fmt not in FORMATS.values():
                raise ShippedRecordError(f"{path}: unknown format {fmt!r} in the manifest: {fix}")
            read = RunRecord.load if fmt == FORMATS[True] else load_result
            loaded[seed][entry["label"]] = read(path)
    return loaded


def _comparable(config) -> dict:
    """The config as the manifest stores it (JSON: tuples become lists)."""
    return json.loads(json.dumps(plain_config(config)))


def regenerate(name: str, seeds=None, records: Path = RECORDS, progress: bool = True) -> list[dict]:
    """Train ``seeds`` of shipment ``name`` and write their records and manifest entries
    (atomically, one file at a time: an interrupted regeneration keeps what finished)."""
    shipment = _shipment(name)
    import torch

    entries = []
    for seed in _check_seeds(shipment, seeds):
        config = shipment.config(seed)
        started = time.perf_counter()
        runs = shipment.train(config)
        seconds = time.perf_counter() - started
        for label, record in runs.items():
            file = shipment.file(seed, label)
            path = records / file
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
                if isinstance(record, RunRecord):
                    written = record.save(Path(scratch) / path.name)
                else:  # an experiment's plain result (a @storable dataclass): no pickle
                    written = save_result(Path(scratch) / path.name, record)
                os.replace(written, path)
            entry = {
                "shipment": name,
                "experiment": shipment.experiment,
                "preset": shipment.preset,
                "scale": shipment.scale,
                "seed": seed,
                "label": label,
                "format": FORMATS[isinstance(record, RunRecord)],
                "config": _comparable(config),
                "command": shipment.command(seed),
                "spectral_lab": __version__,
                "torch": torch.__version__,
                "device": str(get_device(config.device)),
                "device_name": _device_name(get_device(config.device)),
                "machine": platform.machine(),
                "train_seconds": round(seconds, 1),
                "sha256": _sha256(path),
                "bytes": path.stat().st_size,
            }
            _update_manifest(records, file, entry)
            entries.append(entry)
        if progress:
            print(f"{name} seed {seed}: {len(runs)} record(s) in {seconds:.1f} s")
    return entries


def _device_name(device) -> str:
    """What trained a record, for its caption: the GPU's name, or the CPU's architecture."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU"


@contextlib.contextmanager
def _manifest_lock(records: Path):
    """Several regenerations may run at once (tools/gpu_check.py starts one process per run):
    each read-modify-write of the manifest waits for the others."""
    records.mkdir(parents=True, exist_ok=True)
    with open(records / ".manifest.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_manifest(records: Path, manifest: dict) -> None:
    manifest["records"] = dict(sorted(manifest["records"].items()))
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(records / MANIFEST_NAME, lambda handle: handle.write(text.encode()))


def _update_manifest(records: Path, file: str, entry: dict) -> None:
    with _manifest_lock(records):
        manifest = read_manifest(records)
        manifest["records"][file] = entry
        _write_manifest(records, manifest)


def prefix_mismatch(name: str, seed: int, config=None, records: Path = RECORDS) -> str | None:
    """Train the first ``prefix`` steps of a shipped run again and compare them with the record:
    ``None`` when every singular value of every layer at every common snapshot agrees within
    :data:`PREFIX_TOLERANCE` of that layer's top singular value (within
    :data:`ACROSS_DEVICES_TOLERANCE` for a record made on another kind of device), else what
    differs and the command
    that refreshes the records. ``config`` replaces the shipped config (the tests pass a
    perturbed one to show that a change of the science is caught)."""
    shipment = _shipment(name)
    shipped = load(name, [seed], records)[seed]
    config = shipment.config(seed) if config is None else config
    entries = read_manifest(records)["records"].values()
    made_on = {e["device"] for e in entries if e.get("shipment") == name and e["seed"] == seed}
    here = get_device(config.device).type
    across = any(device.split(":")[0] != here for device in made_on)
    if shipment.train_prefix is not None:
        fresh = shipment.train_prefix(config, shipment.prefix)
    else:
        fresh = shipment.train(config.with_overrides(**{shipment.length: shipment.prefix}))
    for label, record in fresh.items():
        old = shipped[label]
        if not isinstance(record, RunRecord):
            continue  # a plain result: the records beside it carry the check
        common = [int(s) for s in record.steps if int(s) in set(old.steps.tolist())]
        if len(common) < 2:
            raise ValueError(f"{name}: the prefix shares fewer than two snapshots with the record")
        for layer in record.layers:
            new_values = np.stack(
                [record.singular_values(layer)[record.index_of(s)] for s in common]
            )
            old_values = np.stack([old.singular_values(layer)[old.index_of(s)] for s in common])
            scale = old_values[:, :1]
            errors = np.max(np.abs(new_values - old_values) / scale, axis=1)
            tolerance = np.full(len(common), PREFIX_TOLERANCE)
            if across:
                tolerance[:] = ACROSS_DEVICES_TOLERANCE["later"]
                tolerance[np.array(common) == 0] = ACROSS_DEVICES_TOLERANCE["initialisation"]
            if not np.all(errors <= tolerance):
                worst = int(np.argmax(errors / tolerance))
                return (
                    f"{name} seed {seed} {label or 'record'}: {layer}'s singular values at step "
                    f"{common[worst]} differ from the shipped record by {errors[worst]:.2g} of "
                    f"s_1 (tolerance {tolerance[worst]:g}"
                    f"{f', made on {sorted(made_on)[0]}, checked on {here}' if across else ''}): "
                    f"the code no longer reproduces the "
                    f"shipped runs; refresh them with `python -m spectral_lab records regenerate "
                    f"{name}`"
                )
    return None


def describe(name: str, records: Path = RECORDS) -> str:
    """One line for a figure's caption: what the shipped runs are (scale, seeds, device)."""
    shipment = _shipment(name)
    entries = [e for e in read_manifest(records)["records"].values() if e.get("shipment") == name]
    devices = sorted({e["device"] for e in entries}) or ["not yet trained"]
    seeds = sorted({e["seed"] for e in entries})
    span = f"{seeds[0]}-{seeds[-1]}" if seeds else "none"
    return f"{shipment.preset} scale, seeds {span}, {', '.join(devices)}"
