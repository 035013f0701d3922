"""The book's experiments: one module per chapter, named like the chapter, and the command line's
registry.

=================  ==========================================================================
module             chapter and what it holds
=================  ==========================================================================
grokking           "Grokking": GrokkingConfig, the full-batch AdamW loop ``train``
weight_decay       "Weight decay": WeightDecaySweep, the sweep and its summary
classifier         the minibatch SGD loop ``fit`` that the next three chapters share
memorization       "Memorization": true against random labels
lottery            "Lottery tickets": magnitude and random masks, rewinding, IMP
interpolation      two networks and the path between them: barriers, SVA
connectivity       "Linear mode connectivity": trunks, splits, branches, perturbations
architectures      "Across architectures": ConvNet, LSTM, Transformer LM, diffusion UNet
prediction         "A spectral theory of neural prediction"
hessian            "Hessian outliers along training"
=================  ==========================================================================

A chapter module imports the lens (:mod:`spectral_lab.spectra`, ``tracker``,
``record``, ...) and the run kit (:mod:`spectral_lab.config`, ``sweeps``,
``data``, ``models``), never the other way round. :data:`EXPERIMENTS` is the
registry ``python -m spectral_lab`` reads: each chapter module defines its own
entry, and they are listed here, explicitly, in one place.
"""

from __future__ import annotations

from ..config import Experiment
from . import architectures, connectivity, grokking, memorization, weight_decay

__all__ = ["EXPERIMENTS"]

#: Experiment name -> :class:`~spectral_lab.config.Experiment`; a new experiment is one more line.
EXPERIMENTS: dict[str, Experiment] = {
    "grokking": grokking.EXPERIMENT,
    "weight_decay": weight_decay.EXPERIMENT,
    "memorization": memorization.EXPERIMENT,
    "connectivity": connectivity.EXPERIMENT,
    **architectures.EXPERIMENTS,  # arch_convnet, arch_lstm, arch_transformer, arch_unet
}
