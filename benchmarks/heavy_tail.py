"""What the heavy-tail metrics cost beside the snapshot they are read from (target <= 10 %).

For each benchmark model: the median time of one tracker snapshot (batched SVDs, metrics,
vectors, record) and of the heavy-tail metrics of that snapshot (every layer, from its singular
values: :func:`spectral_lab.heavy_tail.spectrum_metrics` on the spectra in hand, and
:func:`~spectral_lab.heavy_tail.record_metrics` reading them from the record), measured back to
back in one process; the ratios are printed.

Run:  python benchmarks/heavy_tail.py [--repeats 30] [--agreement]   (one torch thread)
``--agreement`` also prints alpha beside WeightWatcher's on the same matrices.
Not a test: it prints figures and always exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import spectral_lab as sl
from spectral_lab.heavy_tail import record_metrics, spectrum_metrics


def mlp(widths) -> nn.Sequential:
    layers = []
    for d_in, d_out in zip(widths, widths[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def models() -> dict[str, nn.Module]:
    from spectral_lab.experiments import GrokkingConfig

    torch.manual_seed(0)
    grokking = GrokkingConfig.quick()
    return {
        "MLP 40-256-256-10 (benchmarks/tracking.py)": mlp((40, 256, 256, 10)),
        "MLP 40-1024-1024-10": mlp((40, 1024, 1024, 10)),
        "grokking transformer (GrokkingConfig.quick)": grokking.make_model(),
    }


def measure(model: nn.Module, repeats: int) -> tuple[float, float, float]:
    """Median seconds of one snapshot, of the metrics of its spectra read from the record, and of
    the metrics of the same spectra already in hand (what a hook at the snapshot would pay)."""
    tracker = sl.SpectralTracker(model, every=1, top_k=10)
    shapes = {ref.name: ref.shape for ref in tracker.refs}
    steps = iter(range(10**9))

    def snapshot() -> None:
        tracker.snapshot(next(steps), model)

    def from_record() -> None:
        record = tracker.record
        record_metrics(record, steps=record.steps[-1:])

    snapshot()
    record = tracker.record
    spectra = {name: record.series(name, "singular_values")[-1:] for name in shapes}

    def in_hand() -> None:
        spectrum_metrics(spectra, shapes)

    functions = (snapshot, from_record, in_hand)
    for fn in functions:  # warm-up
        fn()
    times = {fn: [] for fn in functions}
    for _ in range(repeats):
        for fn in functions:
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    return tuple(statistics.median(times[fn]) for fn in functions)


def agreement_table() -> None:
    """Alpha here and in WeightWatcher on the same matrices (heavy-tailed random, and trained)."""
    import logging

    import numpy as np

    try:
        import weightwatcher
    except ImportError:
        print("weightwatcher is not installed (pip install weightwatcher): no agreement table")
        return
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    rng = np.random.default_rng(0)
    matrices = {
        "gaussian 300x100": rng.standard_normal((300, 100)),
        "student-t 3, 400x200": rng.standard_t(3, (400, 200)),
        "student-t 2, 256x256": rng.standard_t(2, (256, 256)),
        "pareto 2.5, 500x120": rng.pareto(2.5, (500, 120)) * rng.choice([-1, 1], (500, 120)),
        "cauchy 200x150": rng.standard_cauchy((200, 150)),
    }
    torch.manual_seed(0)
    trained = mlp((32, 96, 96, 64))
    opt = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(256, 32), torch.randint(0, 64, (256,))
    for _ in range(300):  # random labels: the weights travel far from their initialisation
        loss = nn.functional.cross_entropy(trained(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for i in (0, 2, 4):
        W = trained[i].weight.detach().numpy().astype(np.float64)
        matrices[f"trained mlp.{i} {W.shape[0]}x{W.shape[1]}"] = W
    layers = [nn.Linear(W.shape[1], W.shape[0], bias=False) for W in matrices.values()]
    with torch.no_grad():
        for layer, W in zip(layers, matrices.values()):
            layer.weight.copy_(torch.as_tensor(W))
    details = weightwatcher.WeightWatcher(model=nn.Sequential(*layers)).analyze()
    spectra = {
        name: torch.linalg.svdvals(layer.weight.detach())[None].numpy()
        for name, layer in zip(matrices, layers)
    }
    ours = spectrum_metrics(spectra, {name: W.shape for name, W in matrices.items()})
    print(f"{'matrix':<26}{'alpha here':>11}{'WeightWatcher':>15}{'rel. diff':>11}")
    for column, name in enumerate(matrices):
        a, b = ours.alpha[0, column], details.iloc[column]["alpha"]
        print(f"{name:<26}{a:>11.4f}{b:>15.4f}{abs(a - b) / b:>11.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--agreement", action="store_true", help="also print alpha beside WeightWatcher's"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, load {os.getloadavg()[0]:.2f} (1 min)")
    for name, model in models().items():
        t_snap, t_record, t_hand = measure(model, args.repeats)
        print(
            f"{name}: snapshot {1e3 * t_snap:.2f} ms; heavy-tail metrics of it "
            f"{1e3 * t_hand:.2f} ms ({100 * t_hand / t_snap:.1f} %, target <= 10 %), "
            f"{1e3 * t_record:.2f} ms read from the record ({100 * t_record / t_snap:.1f} %)"
        )
    if args.agreement:
        agreement_table()


if __name__ == "__main__":
    main()
