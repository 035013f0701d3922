"""Linear mode connectivity (LMC, SPEC section 2): trunks, split steps, branches, perturbations.

Frankle et al. (2020) train a *trunk*, copy it at a *split step* ``k`` into two
*branches* that see the training data in different orders, and ask from which
``k`` on the two endpoints are linearly connected
(:mod:`spectral_lab.experiments.interpolation`). Yunis et al. (section 7.3) add
the spectral view: when LMC holds, the endpoints share their top singular
vectors, and perturbing the weights at the split destroys both together.

* :func:`perturb` - the paper's perturbation of the weights at the split;
* :class:`ConnectivityConfig` and :func:`run_connectivity` - the whole
  experiment (trunk, branches, other trunks, perturbations), built on
  :func:`spectral_lab.experiments.classifier.fit`, as independent jobs
  (:func:`connectivity_jobs`, :func:`run_job`) that any sweep engine can run.

Chapter: "Linear mode connectivity".
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Experiment
from ..data import ClassificationData
from ..pruning import svd_pruning_losses
from ..record import plain_config
from ..runtime import get_device, seed_everything
from ..sweeps import locked_store, result_path, storable, sweep
from ..views import LayerSelector, find_matrices
from .classifier import ClassifierConfig, evaluate_classifier, fit
from .interpolation import (
    InterpolationCurve,
    State,
    interpolation_curve,
    singular_vector_agreement,
    sva_score,
)

__all__ = [
    "EXPERIMENT",
    "perturb",
    "ConnectivityConfig",
    "PairResult",
    "ConnectivityResult",
    "run_connectivity",
    "ConnectivityJob",
    "connectivity_jobs",
    "run_job",
    "PARTS",
]


# ---- perturbation --------------------------------------------------------------------------------
@torch.no_grad()
def perturb(model: nn.Module, eta: float, seed: int, layers: LayerSelector = None) -> nn.Module:
    """A perturbed deep copy of ``model`` (``model`` itself is untouched); SPEC section 2.

    Every selected matrix becomes ``W' = W + eta ||W|| eps / ||eps||`` with
    ``eps`` standard Gaussian noise of ``W``'s shape, and is then rescaled to
    its old Frobenius norm: ``W' <- ||W|| W' / ||W'||``. So ``||W'|| == ||W||``
    exactly and only the direction of the matrix changes, by an angle that
    grows with ``eta``. Noise is drawn on the CPU from ``torch.Generator(seed)``,
    matrix after matrix in registration order, so the result does not depend
    on the device. ``layers`` selects matrices as in
    :func:`~spectral_lab.views.find_matrices`; by default every matrix except
    the last (the output layer), as in the paper's code. Biases are kept.
    """
    if (
        isinstance(eta, bool)
        or not isinstance(eta, (int, float, np.floating))
        or not math.isfinite(eta)
        or eta < 0
    ):
        raise ValueError(
            f"eta must be a finite number >= 0 (the noise's norm relative to ||W||), got {eta!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    refs = find_matrices(model, layers)
    if layers is None:
        if len(refs) < 2:
            raise ValueError(
                f"{type(model).__name__} has a single weight matrix, the last layer, "
                "which is never perturbed"
            )
        refs = refs[:-1]
    perturbed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(int(seed))
    for ref in refs:
        module = perturbed.get_submodule(ref.module) if ref.module else perturbed
        W = getattr(
            module, ref.param
        )  # any shape: the Frobenius norm and iid noise ignore how it is viewed
        eps = torch.randn(W.shape, generator=generator, dtype=torch.float64)
        W64 = W.detach().to("cpu", torch.float64)
        norm = torch.linalg.vector_norm(W64)
        moved = W64 + float(eta) * norm * eps / torch.linalg.vector_norm(eps)
        W.copy_((norm * moved / torch.linalg.vector_norm(moved)).to(W.dtype))
    return perturbed


# ---- the experiment ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectivityConfig(ClassifierConfig):
    """The LMC experiment: one classification recipe, trunks, split steps, branches, perturbations.

    The training recipe is :class:`~spectral_lab.experiments.classifier.ClassifierConfig`'s
    (MNIST-1D, MLP 40-256-256-10, SGD with momentum and cosine decay, 5,000
    steps). On top of it:

    * ``trunk_seeds`` - initialisation seeds of the trunks; each trunk is
      trained with data order ``data_seed`` up to every split step;
    * ``split_steps`` - where the trunk is copied into branches;
    * ``branch_seeds`` - the data-order seeds of the branches (two or more;
      every pair of branches is one LMC pair), trained to the end of the run;
    * ``other_seeds`` - initialisation seeds of extra runs trained from
      scratch, for the control "branches from different trunks" (their data
      order is ``branch_seeds[0]``); together with the trunks' first branches
      at the last split, every pair of different initialisations is compared;
    * ``etas``, ``perturb_step`` - perturbation strengths (:func:`perturb`) and
      the split step where both branches are perturbed, each with its own
      seed (its data seed); ``perturb_step=-1`` means the last split step;
    * ``alphas`` - interpolation points; ``top_k`` - the SVA's k.

    ``eval_every`` and ``track_every`` only say how often :func:`fit` measures
    a run on its way; the experiment reads the endpoints and needs none of
    it, so they default to 5,000 steps, the whole run of the presets.
    """

    experiment: ClassVar[str] = "connectivity"
    trunk_seeds: tuple[int, ...] = (0,)
    split_steps: tuple[int, ...] = (0, 31, 125, 375, 1000)
    branch_seeds: tuple[int, ...] = (1, 2)
    other_seeds: tuple[int, ...] = (1, 2)
    etas: tuple[float, ...] = (1.0, 2.0, 4.0)
    perturb_step: int = -1
    alphas: int = 11
    eval_every: int = 5000
    track_every: int = 5000

    def validate(self) -> None:
        super().validate()
        if not self.trunk_seeds:
            raise ValueError("trunk_seeds must name at least one trunk")
        if len(set(self.trunk_seeds) | set(self.other_seeds)) != len(self.trunk_seeds) + len(
            self.other_seeds
        ):
            raise ValueError(
                f"trunk_seeds {self.trunk_seeds} and other_seeds {self.other_seeds} must all "
                "differ: "
                "each is a different initialisation"
            )
        if len(self.branch_seeds) < 2 or len(set(self.branch_seeds)) != len(self.branch_seeds):
            raise ValueError(
                "branch_seeds must hold at least two different data-order seeds, got "
                f"{self.branch_seeds}"
            )
        if (
            not self.split_steps
            or any(s < 0 for s in self.split_steps)
            or list(self.split_steps) != sorted(set(self.split_steps))
        ):
            raise ValueError(
                f"split_steps must be non-negative and strictly increasing, got {self.split_steps}"
            )
        if any(eta <= 0 for eta in self.etas):
            raise ValueError(
                "etas must be positive (eta 0 is the unperturbed pair, always measured), got "
                f"{self.etas}"
            )
        if self.etas and self.perturb_step != -1 and self.perturb_step not in self.split_steps:
            raise ValueError(
                f"perturb_step={self.perturb_step} must be one of split_steps {self.split_steps} "
                "(or -1 for the last), so that its unperturbed pair exists"
            )
        if self.alphas < 3:
            raise ValueError(
                "alphas must be at least 3 (both endpoints and one point between), got "
                f"{self.alphas}"
            )
        if self.label_noise:
            raise ValueError("the LMC experiment trains on true labels (label_noise=0)")

    def with_seed(self, seed: int) -> "ConnectivityConfig":
        """The same experiment drawn again: every seed it uses (the trunks' initialisations and
        data order, the branches' data orders and perturbations, the other initialisations of the
        control) moved by ``100 * seed``.

        The data set, the split steps and every setting stay, and so does the preset's name;
        ``with_seed(0)`` of a preset is the preset. The offset keeps a replicate's seeds apart
        from those of seed 0 (which uses 0, 1 and 2).
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        offset = 100 * int(seed)

        def moved(seeds: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(s + offset for s in seeds)

        return replace(  # replace(), not with_overrides(): the preset keeps its name
            self,
            seed=self.seed + offset,
            data_seed=self.data_seed + offset,
            trunk_seeds=moved(self.trunk_seeds),
            branch_seeds=moved(self.branch_seeds),
            other_seeds=moved(self.other_seeds),
        )

    @property
    def perturbed_split(self) -> int:
        """The split step at which the perturbed branches start."""
        return self.split_steps[-1] if self.perturb_step == -1 else self.perturb_step

    def training_config(self) -> ClassifierConfig:
        """The plain :class:`ClassifierConfig` every trunk and branch is trained with."""
        names = {f.name for f in ClassifierConfig.__dataclass_fields__.values()}
        return ClassifierConfig(
            **{name: value for name, value in asdict(self).items() if name in names}
        )

    @classmethod
    def quick(cls) -> "ConnectivityConfig":
        """MNIST-1D, the MLP, one trunk, 5 split steps, 2 other initialisations, 3 etas: about a
        minute on a CPU."""
        return cls(preset="quick")

    @classmethod
    def full(cls) -> "ConnectivityConfig":
        """The paper's design at the offline stand-in's scale: the 1-D CNN, 3 trunks, 3 branches, 11
        splits, 5 etas.

        The paper's image setting (a VGG on CIFAR-10, splits at fractions of the
        first epochs, several seeds) needs data this project cannot download;
        MNIST-1D with the CNN is its stand-in. About 600,000 SGD steps: a GPU run.
        """
        return cls(
            preset="full",
            model="cnn",
            trunk_seeds=(0, 1, 2),
            branch_seeds=(11, 12, 13),
            other_seeds=(3,),
            split_steps=(0, 8, 16, 31, 63, 125, 250, 375, 625, 1000, 2000),
            etas=(0.25, 0.5, 1.0, 2.0, 4.0),
        )

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "ConnectivityConfig"]]:
        return {"quick": cls.quick, "full": cls.full}


@storable
@dataclass
class PairResult:
    """Two trained networks compared: the interpolation curve between them and the SVA of every
    matrix.

    ``kind`` is ``"split"`` (two branches of one trunk), ``"cross"`` (two
    different initialisations) or ``"perturbed"`` (two branches perturbed at
    the split with ``eta``). ``states`` are the endpoints' state dicts (CPU).
    """

    kind: str
    label: str
    curve: InterpolationCurve
    sva: dict[str, np.ndarray]  # layer -> (k, k)
    states: tuple[State, State] = field(repr=False)
    split_step: int | None = None
    trunk_seed: int | None = None
    eta: float = 0.0

    @property
    def loss_barrier(self) -> float:
        return self.curve.loss_barrier("train")

    @property
    def error_barrier(self) -> float:
        return self.curve.error_barrier("test")

    def sva_score(self, layer: str, k: int = 10) -> float:
        return sva_score(self.sva[layer], k)

    def __repr__(self) -> str:
        scores = ", ".join(f"{name} {self.sva_score(name):.2f}" for name in self.sva)
        return (
            f"PairResult({self.label}: loss barrier {self.loss_barrier:.3f}, "
            f"error barrier {self.error_barrier:.3f}, SVA {scores})"
        )


@storable
@dataclass
class ConnectivityResult:
    """What :func:`run_connectivity` returns: plain numbers and arrays, and the endpoints' states.

    ``pairs`` lists every comparison (see :class:`PairResult`);
    :meth:`select` filters them, :meth:`by_split` averages the split pairs over
    trunks and branch pairs, :meth:`by_eta` the perturbed ones.
    ``pruning`` maps ``"split <k>"`` to :func:`svd_pruning_losses` of the first
    branch's endpoint at the last split step and at split 0.
    """

    config: dict
    layers: list[str]
    pairs: list[PairResult]
    pruning: dict[str, dict[str, dict[str, float]]]
    seconds: float = 0.0

    def select(self, kind: str, **where) -> list[PairResult]:
        chosen = [
            p
            for p in self.pairs
            if p.kind == kind and all(getattr(p, k) == v for k, v in where.items())
        ]
        if not chosen:
            raise ValueError(
                f"no {kind!r} pairs with {where}; kinds present: "
                f"{sorted({p.kind for p in self.pairs})}"
            )
        return chosen

    def _table(self, pairs_by_key: dict, k: int) -> dict[str, np.ndarray]:
        table = {
            "loss_barrier": [],
            "error_barrier": [],
            **{f"sva:{name}": [] for name in self.layers},
        }
        for pairs in pairs_by_key.values():
            table["loss_barrier"].append(np.mean([p.loss_barrier for p in pairs]))
            table["error_barrier"].append(np.mean([p.error_barrier for p in pairs]))
            for name in self.layers:
                table[f"sva:{name}"].append(np.mean([p.sva_score(name, k) for p in pairs]))
        return {key: np.asarray(values) for key, values in table.items()}

    def by_split(self, k: int = 10) -> dict[str, np.ndarray]:
        """``split_step`` and, per split, the mean ``loss_barrier``, ``error_barrier`` and
        ``sva:<layer>`` scores."""
        splits = sorted({p.split_step for p in self.select("split")})
        table = self._table({s: self.select("split", split_step=s) for s in splits}, k)
        return {"split_step": np.asarray(splits), **table}

    def by_eta(self, k: int = 10) -> dict[str, np.ndarray]:
        """``eta`` (0 first: the unperturbed pairs at the same split) and the same means as
        :meth:`by_split`."""
        step = self.select("perturbed")[0].split_step
        etas = [0.0] + sorted({p.eta for p in self.select("perturbed")})
        groups = {
            eta: (
                self.select("split", split_step=step)
                if eta == 0
                else self.select("perturbed", eta=eta)
            )
            for eta in etas
        }
        return {"eta": np.asarray(etas), **self._table(groups, k)}

    def report(self, k: int = 10) -> str:
        """The result as a text table: barriers and mean top-k SVA per split step (what the CLI
        prints)."""
        table = self.by_split(k)
        lines = [
            repr(self),
            f"{'split':>7} {'loss barrier':>13} {'error barrier':>14} {'mean SVA':>9}",
        ]
        for i, step in enumerate(table["split_step"]):
            sva = np.mean([table[f"sva:{name}"][i] for name in self.layers])
            lines.append(
                f"{step:>7} {table['loss_barrier'][i]:>13.3f} {table['error_barrier'][i]:>14.3f} "
                f"{sva:>9.2f}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        kinds = {
            kind: sum(p.kind == kind for p in self.pairs)
            for kind in ("split", "cross", "perturbed")
        }
        return (
            f"ConnectivityResult({self.config['preset']}: {kinds['split']} split pairs, "
            f"{kinds['cross']} "
            f"cross-trunk pairs, {kinds['perturbed']} perturbed pairs; {self.seconds:.0f} s)"
        )


def _cpu_state(model: nn.Module) -> State:
    return {name: value.detach().to("cpu").clone() for name, value in model.state_dict().items()}


PARTS = ("split", "cross", "perturbed")


@dataclass(frozen=True)
class ConnectivityJob:
    """One independent piece of the LMC grid: what :func:`run_connectivity` hands to a sweep engine.

    Either one trunk grown to one split step with its branches (``trunk_seed``
    and ``split_step``; at ``config.perturbed_split`` also the perturbed
    branches), or one run from scratch for the cross-initialisation control
    (``other_seed``). Jobs share nothing, so an engine can run them anywhere.
    """

    config: ConnectivityConfig
    parts: tuple[str, ...] = PARTS
    trunk_seed: int | None = None
    split_step: int | None = None
    other_seed: int | None = None

    def __repr__(self) -> str:
        what = (
            f"other init {self.other_seed}"
            if self.other_seed is not None
            else f"trunk {self.trunk_seed}, split {self.split_step}"
        )
        return f"ConnectivityJob({self.config.preset}: {what})"


@storable
@dataclass
class JobResult:
    """What a :class:`ConnectivityJob` returns: its pairs, its pruning test, and the endpoint for
    the control."""

    pairs: list[PairResult]
    pruning: dict[str, dict[str, dict[str, float]]]
    endpoint: State | None = field(
        default=None, repr=False
    )  # a branch (or run) at the end, for "cross" pairs


def connectivity_jobs(
    config: ConnectivityConfig, parts: Sequence[str] = PARTS
) -> list[ConnectivityJob]:
    """The grid of ``config`` as independent jobs: every (trunk, split step), then every other
    initialisation."""
    parts = tuple(parts)
    if "split" not in parts or not set(parts) <= set(PARTS):
        raise ValueError(
            f"parts must include 'split' and may add 'cross' and 'perturbed', got {parts}"
        )
    jobs = [
        ConnectivityJob(config, parts, trunk_seed=seed, split_step=split)
        for seed in config.trunk_seeds
        for split in config.split_steps
    ]
    if "cross" in parts:
        jobs += [ConnectivityJob(config, parts, other_seed=seed) for seed in config.other_seeds]
    return jobs


_DATA: dict = {}  # one dataset per recipe and device in each process that runs jobs


def _job_data(recipe: ClassifierConfig, device) -> ClassificationData:
    key = (repr(recipe), str(device))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = recipe.make_data().to(device)
    return _DATA[key]


def _template(config: ConnectivityConfig, data: ClassificationData, device) -> nn.Module:
    """A network of the experiment's architecture: interpolation loads each point's weights into
    it."""
    seed_everything(config.trunk_seeds[0])
    return config.training_config().make_model(data).to(device)


def run_job(job: ConnectivityJob) -> JobResult:
    """Train one piece of the grid and compare its pairs (see :func:`run_connectivity`)."""
    config = job.config
    recipe = config.training_config()
    device = get_device(config.device)
    data = _job_data(recipe, device)
    seeds = config.branch_seeds
    if job.other_seed is not None:
        run = fit(
            replace(recipe, seed=job.other_seed),
            None,
            data,
            data_seed=seeds[0],
            track=False,
            progress=False,
        )
        return JobResult([], {}, _cpu_state(run.model))
    template = _template(config, data, device)
    trunk_config = replace(recipe, seed=job.trunk_seed)
    seed_everything(job.trunk_seed)
    trunk = trunk_config.make_model(data).to(device)
    split = job.split_step
    grown = fit(
        trunk_config, trunk, data, stop_step=split, track=False, progress=False
    )  # one piece: = in steps

    def branch(model: nn.Module, data_seed: int) -> nn.Module:
        return fit(
            recipe,
            copy.deepcopy(model),
            data,
            start_step=split,
            optimizer_state=grown.optimizer_state,
            data_seed=data_seed,
            track=False,
            progress=False,
        ).model

    pairs = []

    def compare(kind: str, label: str, ends: list[nn.Module], **info) -> None:
        for i, j in combinations(range(len(ends)), 2):  # every pair of branches
            a, b = ends[i], ends[j]
            curve = interpolation_curve(
                template, a.state_dict(), b.state_dict(), data, config.alphas
            )
            pairs.append(
                PairResult(
                    kind,
                    f"{label}, branches {seeds[i]}/{seeds[j]}",
                    curve,
                    singular_vector_agreement(a, b, config.top_k),
                    (_cpu_state(a), _cpu_state(b)),
                    split_step=split,
                    trunk_seed=job.trunk_seed,
                    **info,
                )
            )

    ends = [branch(trunk, s) for s in seeds]
    compare("split", f"trunk {job.trunk_seed}, split {split}", ends)
    pruning = {}
    if job.trunk_seed == config.trunk_seeds[0] and split in (
        config.split_steps[0],
        config.split_steps[-1],
    ):
        pruning[f"split {split}"] = svd_pruning_losses(
            ends[0], lambda m: evaluate_classifier(m, data)
        )
    if split == config.perturbed_split and "perturbed" in job.parts:
        for eta in config.etas:
            compare(
                "perturbed",
                f"trunk {job.trunk_seed}, split {split}, eta {eta:g}",
                [branch(perturb(trunk, eta, s), s) for s in seeds],
                eta=eta,
            )
    return JobResult(
        pairs, pruning, _cpu_state(ends[0]) if split == config.split_steps[-1] else None
    )


def run_connectivity(
    config: ConnectivityConfig,
    progress: bool | None = None,
    parts: Sequence[str] = PARTS,
    engine: str = "serial",
    out_dir=None,
    **engine_options,
) -> ConnectivityResult:
    """Trunks, branches, other initialisations and perturbed branches; every pair interpolated and
    compared.

    For each trunk (init seed in ``config.trunk_seeds``) and split step ``k``:
    train the trunk with :func:`~spectral_lab.experiments.classifier.fit` to step ``k``,
    and from there one copy per branch seed to the end, ``fit(...,
    start_step=k, optimizer_state=<the trunk's>, data_seed=<branch seed>)``:
    the branches inherit the trunk's momentum and differ only in the order of
    the minibatches. At ``config.perturbed_split`` the branches are also
    trained from :func:`perturb`-ed copies, one per eta (the perturbation's
    seed is the branch's data seed). Runs from ``config.other_seeds`` are
    trained from scratch. Every pair is interpolated at ``config.alphas``
    points and its SVA computed at ``config.top_k``. ``parts`` chooses what
    to run: the split pairs always, the controls ``"cross"`` (other
    initialisations) and ``"perturbed"`` when listed.

    Each (trunk, split) and each other initialisation is a
    :class:`ConnectivityJob`, run through :func:`spectral_lab.sweep`:
    ``engine`` and ``engine_options`` (``address``, ``workers``, ``gpus``,
    ``retries``) spread them over processes or a cluster, and ``out_dir``
    keeps each job's result as it lands, so an interrupted grid resumes. The
    cross-initialisation pairs are compared here, once every job is in.
    """
    start = time.perf_counter()
    jobs = connectivity_jobs(config, parts)
    recipe = config.training_config()
    device = get_device(config.device)
    data = _job_data(recipe, device)
    total = recipe.total_steps(len(data.train_y))
    if config.split_steps[-1] > total:
        raise ValueError(f"split step {config.split_steps[-1]} lies beyond the run's {total} steps")
    results = sweep(
        jobs,
        run_job,
        engine=engine,
        out_dir=out_dir,
        progress=progress,
        label=_job_label,
        **engine_options,
    )
    pairs = [pair for result in results for pair in result.pairs]
    pruning = {name: losses for result in results for name, losses in result.pruning.items()}
    data = _job_data(recipe, device)  # again: a job run here may have replaced the cached one
    template = _template(config, data, device)
    if (
        "cross" in parts
    ):  # every pair of different initialisations: the trunks' first branches, the other runs
        ends = [
            (job.trunk_seed if job.other_seed is None else job.other_seed, result.endpoint)
            for job, result in zip(jobs, results)
            if result.endpoint is not None
        ]
        for (seed_a, a), (seed_b, b) in combinations(ends, 2):
            curve = interpolation_curve(template, a, b, data, config.alphas)
            pairs.append(
                PairResult(
                    "cross",
                    f"inits {seed_a}/{seed_b}",
                    curve,
                    _state_agreement(template, a, b, config.top_k),
                    (a, b),
                    trunk_seed=seed_a,
                )
            )
    layers = [ref.name for ref in find_matrices(template)]
    return ConnectivityResult(
        plain_config(config), layers, pairs, pruning, time.perf_counter() - start
    )


def _state_agreement(
    template: nn.Module, state_a: State, state_b: State, k: int
) -> dict[str, np.ndarray]:
    a, b = copy.deepcopy(template), copy.deepcopy(template)
    a.load_state_dict(state_a)
    b.load_state_dict(state_b)
    return singular_vector_agreement(a, b, k)


# ---- the command line: python -m spectral_lab sweep connectivity --engine local --out runs/lmc
# ---------
def _job_label(job: ConnectivityJob) -> str:
    return (
        f"other_{job.other_seed}"
        if job.other_seed is not None
        else f"trunk_{job.trunk_seed}-split_{job.split_step}"
    )


def connectivity_outputs(config: ConnectivityConfig, out) -> list:
    """Every file the grid of ``config`` writes under ``out``: one result per job."""
    return [result_path(out, job, label=_job_label) for job in connectivity_jobs(config)]


def _run_for_cli(config, out, resume=False, progress=None):
    with locked_store(out):  # no other process may write the store while its files are replaced
        if not resume:
            for path in connectivity_outputs(config, out):
                path.unlink(missing_ok=True)
        return run_connectivity(config, progress=progress, out_dir=out)


def _sweep_for_cli(config, out, progress=None, **engine):
    return run_connectivity(config, progress=progress, out_dir=out, **engine)


EXPERIMENT = Experiment(
    ConnectivityConfig,
    _run_for_cli,
    connectivity_outputs,
    "",
    "a folder with one result per (trunk, split step) and other init (.npz)",
    _sweep_for_cli,
)
