"""What online spectral tracking costs, as ratios measured in one run on the current device.

(a) training time with tracking at the chapters' cadence / training time without it
    (target <= 1.05), with the SVDs on the training thread and with ``background=True``
    (on a worker thread, which hides them when a core is free);
(b) one tracker snapshot / the raw batched ``torch.linalg.svd`` of the same matrices
    (target <= 1.15): everything the tracker adds to the SVD itself (stacking, metrics,
    top-k vectors, agreement, alignment, copy to the host, the record).

Run:  python benchmarks/tracking.py [--device cuda] [--steps 3000] [--every 100]
Timings pair the variants back to back (alternating order) and report the median
ratio, so a noisy machine moves both sides of a ratio together. Not a test: it prints figures and
always exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import torch
from torch import nn

import spectral_lab as sl


def make_model(widths, device) -> nn.Sequential:
    layers = []
    for d_in, d_out in zip(widths, widths[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_seconds(
    widths,
    device,
    steps: int,
    batch: int,
    every: int | None,
    seed: int = 0,
    background: bool = False,
) -> float:
    """Wall time of a plain SGD loop (MNIST-1D-sized inputs), with or without a tracker (until its
    record is complete)."""
    sl.seed_everything(seed)
    model = make_model(widths, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    X = torch.randn(4000, widths[0], device=device)
    y = torch.randint(0, widths[-1], (4000,), device=device)
    tracker = (
        sl.SpectralTracker(model, every=every, top_k=10, background=background) if every else None
    )
    order = torch.randint(0, 4000, (steps, batch), device=device)
    sync(device)
    start = time.perf_counter()
    for step in range(steps):
        idx = order[step]
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.step(step, model, loss=loss)  # the tensor: .item() only when a snapshot is due
    if tracker is not None:
        tracker.flush()  # every snapshot decomposed and recorded
    sync(device)
    return time.perf_counter() - start


def snapshot_vs_svd(widths, device, repeats: int) -> tuple[float, float]:
    """Median seconds of one tracker snapshot and of the batched SVDs it is built on."""
    model = make_model(widths, device)
    tracker = sl.SpectralTracker(model, every=1, top_k=10)
    groups = defaultdict(list)
    for ref in tracker.refs:
        W = ref.view(model).detach()
        groups[tuple(W.shape)].append(W)
    stacks = [torch.stack(Ws) for Ws in groups.values()]

    def raw() -> None:
        for A in stacks:
            torch.linalg.svd(A, full_matrices=False)
        sync(device)

    step = iter(range(10**9))

    def snap() -> None:
        tracker.snapshot(next(step), model)
        sync(device)

    for fn in (raw, snap):  # warm-up: kernels, allocator, first-snapshot bookkeeping
        fn()
    times = {raw: [], snap: []}
    for _ in range(repeats):
        for fn in (raw, snap):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    return statistics.median(times[snap]), statistics.median(times[raw])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per timed run")
    parser.add_argument(
        "--every", type=int, default=100, help="the chapters' cadence: steps between snapshots"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of each variant (medians reported)"
    )
    parser.add_argument("--width", type=int, default=256, help="hidden width of the 40-W-W-10 MLP")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="torch CPU threads for every variant (default: all cores but one, the core "
        "background=True needs; the book's chapters use 1)",
    )
    args = parser.parse_args()
    device = sl.get_device(args.device)
    widths = (40, args.width, args.width, 10)
    torch.set_num_threads(args.threads)
    print(
        f"device: {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"model: MLP {'-'.join(map(str, widths))}, batch {args.batch}, {args.steps} SGD steps, "
        f"snapshot every {args.every} steps ({args.steps // args.every} snapshots)"
    )

    train_seconds(widths, device, 200, args.batch, args.every)  # warm-up
    variants = {
        "plain": dict(every=None),
        "tracked": dict(every=args.every),
        "background": dict(every=args.every, background=True),
    }
    seconds = {name: [] for name in variants}
    ratios = {name: [] for name in variants if name != "plain"}
    for repeat in range(args.repeats):
        # back to back, rotating which goes first, so drift on a shared machine cancels in each
        # ratio
        names = list(variants)[repeat % 3 :] + list(variants)[: repeat % 3]
        timed = {
            name: train_seconds(
                widths, device, args.steps, args.batch, seed=repeat, **variants[name]
            )
            for name in names
        }
        for name in variants:
            seconds[name].append(timed[name])
        for name in ratios:
            ratios[name].append(timed[name] / timed["plain"])
    for name, label in (("tracked", "on the training thread"), ("background", "background=True")):
        ratio = statistics.median(ratios[name])
        print(
            f"(a) training, {label}: median {statistics.median(seconds['plain']):.3f} s without "
            "tracking, "
            f"{statistics.median(seconds[name]):.3f} s with -> ratio {ratio:.3f} (median of "
            f"{args.repeats} "
            f"paired runs; target <= 1.05) {'OK' if ratio <= 1.05 else 'OVER'}"
        )

    t_snap, t_svd = snapshot_vs_svd(widths, device, repeats=max(20, 10 * args.repeats))
    ratio_b = t_snap / t_svd
    print(
        f"(b) one snapshot: {1e3 * t_snap:.2f} ms, raw batched SVD of the same matrices: "
        f"{1e3 * t_svd:.2f} ms "
        f"-> ratio {ratio_b:.3f} (target <= 1.15) {'OK' if ratio_b <= 1.15 else 'OVER'}"
    )


if __name__ == "__main__":
    main()
