"""spectral_lab: the package behind *Deep learning through the spectral dynamics of weights*.

The package has three wings; each imports only the ones above it.

1. **The lens** - what readers reuse on their own models:

   * :mod:`~spectral_lab.spectra` - effective rank, stable rank, alignment, agreement
   * :mod:`~spectral_lab.views` - which parameters are weight matrices, and their 2-D views
   * :mod:`~spectral_lab.tracker` - :class:`SpectralTracker`, online SVDs during training
   * :mod:`~spectral_lab.record` - :class:`RunRecord`, the arrays a run leaves behind
   * :mod:`~spectral_lab.curves` - what is read from records (time to generalise, rank drop, ...)
   * :mod:`~spectral_lab.pruning` - SVD pruning and weight masks
   * :mod:`~spectral_lab.curvature` - Hessians, Hessian-vector products, Lanczos
   * :mod:`~spectral_lab.heavy_tail` - power-law alpha, MP spikes: WeightWatcher's lens, over time
   * :mod:`~spectral_lab.checkpoints` - :func:`analyze`: a record from saved checkpoints
   * :mod:`~spectral_lab.plotting`, :mod:`~spectral_lab.widgets` - figures from records
   * :mod:`~spectral_lab.runtime`, :mod:`~spectral_lab.files` - device, seed, run mode, atomic
     writes
   * :mod:`~spectral_lab.integrations` - Lightning / Hugging Face callbacks and TensorBoard /
     W&B / MLflow sinks; each framework imported only when used

2. **The run kit** - how the book's runs are described and run:

   * :mod:`~spectral_lab.config` - :class:`~spectral_lab.config.ExperimentConfig`: typed, checked
     configs with ``quick()`` / ``full()`` presets
   * :mod:`~spectral_lab.sweeps` - :func:`sweep`: many runs on the serial, local, Dask or Ray
     engine, with a resumable store
   * :mod:`~spectral_lab.bookkeeping` - the history, tracker and stamp every loop keeps
   * :mod:`~spectral_lab.data`, :mod:`~spectral_lab.models` - data sets and networks

3. **The book's experiments** - :mod:`spectral_lab.experiments`, one module per chapter
   (``grokking``, ``weight_decay``, ``memorization``, ``lottery``, ``connectivity``, ...), and
   the registry ``python -m spectral_lab run|sweep NAME`` reads (:mod:`spectral_lab.cli`).

Importing the package has no side effects: no device probing, no seeding, no
change of precision.
"""

from importlib import import_module

from .version import __version__

#: Where each public name lives. Names are imported on first use (PEP 562), so that
#: ``python -m spectral_lab`` can answer a usage error without importing torch; ``from
#: spectral_lab import X`` and ``spectral_lab.X`` work as if everything were imported here.
_WHERE = {
    "curves": ".curves",
    "experiments": ".experiments",
    "heavy_tail": ".heavy_tail",
    "integrations": ".integrations",
    "plotting": ".plotting",
    "widgets": ".widgets",
    "analyze": ".checkpoints",
    "ClassificationData": ".data",
    "Corpus": ".data",
    "ModularData": ".data",
    "digits": ".data",
    "grammar_corpus": ".data",
    "mnist1d": ".data",
    "modular_addition": ".data",
    "EXPERIMENTS": ".experiments",
    "ArchitectureRun": ".experiments.architectures",
    "train_architecture": ".experiments.architectures",
    "ClassifierConfig": ".experiments.classifier",
    "FitResult": ".experiments.classifier",
    "fit": ".experiments.classifier",
    "GrokkingConfig": ".experiments.grokking",
    "TrainResult": ".experiments.grokking",
    "evaluate": ".experiments.grokking",
    "load_or_train": ".experiments.grokking",
    "load_or_train_all": ".experiments.grokking",
    "train": ".experiments.grokking",
    "WeightDecaySweep": ".experiments.weight_decay",
    "load_or_run_sweep": ".experiments.weight_decay",
    "run_weight_decay_sweep": ".experiments.weight_decay",
    "MLP": ".models",
    "CNN1d": ".models",
    "DigitsCNN": ".models",
    "ModularMLP": ".models",
    "ModularTransformer": ".models",
    "RowLSTM": ".models",
    "TinyUNet": ".models",
    "TransformerLM": ".models",
    "magnitude_mask": ".pruning",
    "random_mask_like": ".pruning",
    "svd_prune": ".pruning",
    "svd_pruning_losses": ".pruning",
    "svd_truncate": ".pruning",
    "RunRecord": ".record",
    "get_device": ".runtime",
    "run_mode": ".runtime",
    "runs_dir": ".runtime",
    "seed_everything": ".runtime",
    "agreement": ".spectra",
    "alignment": ".spectra",
    "diagonal_mean": ".spectra",
    "effective_rank": ".spectra",
    "normalized_effective_rank": ".spectra",
    "singular_values": ".spectra",
    "stable_rank": ".spectra",
    "svd": ".spectra",
    "sweep": ".sweeps",
    "SpectralTracker": ".tracker",
    "centre_tap": ".views",
    "find_matrices": ".views",
    "matrix_view": ".views",
    "split_gates": ".views",
    "split_heads": ".views",
    "interactive_figure": ".widgets",
}


def __getattr__(name: str):
    if name in _WHERE:
        module = import_module(_WHERE[name], __name__)
        value = module if _WHERE[name] == f".{name}" else getattr(module, name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value
    try:  # a submodule not listed above, e.g. spectral_lab.runtime
        return import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "__version__",
    # the lens
    "analyze",
    "curves",
    "heavy_tail",
    "integrations",
    "plotting",
    "widgets",
    "interactive_figure",
    "RunRecord",
    "SpectralTracker",
    "agreement",
    "alignment",
    "centre_tap",
    "diagonal_mean",
    "effective_rank",
    "find_matrices",
    "get_device",
    "magnitude_mask",
    "matrix_view",
    "normalized_effective_rank",
    "random_mask_like",
    "run_mode",
    "runs_dir",
    "seed_everything",
    "singular_values",
    "split_gates",
    "split_heads",
    "stable_rank",
    "svd",
    "svd_prune",
    "svd_pruning_losses",
    "svd_truncate",
    # the run kit
    "sweep",
    "ClassificationData",
    "Corpus",
    "ModularData",
    "digits",
    "grammar_corpus",
    "mnist1d",
    "modular_addition",
    "CNN1d",
    "DigitsCNN",
    "MLP",
    "ModularMLP",
    "ModularTransformer",
    "RowLSTM",
    "TinyUNet",
    "TransformerLM",
    # the book's experiments
    "experiments",
    "EXPERIMENTS",
    "ArchitectureRun",
    "ClassifierConfig",
    "FitResult",
    "GrokkingConfig",
    "TrainResult",
    "WeightDecaySweep",
    "evaluate",
    "fit",
    "load_or_run_sweep",
    "load_or_train",
    "load_or_train_all",
    "run_weight_decay_sweep",
    "train",
    "train_architecture",
]
