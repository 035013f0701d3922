"""What online spectral tracking costs, measured interleaved in one run (issue 17's table).

(a) training with tracking / without (target <= 1.05): an MLP (snapshot every 100 steps) and the
    quick grokking run (1,500 full-batch steps, snapshot every 25), on the training thread and
    with ``background=True``;
(b) one tracker snapshot / the raw batched ``torch.linalg.svd`` of the same matrices (target
    <= 1.15) and / ``weightwatcher``'s ``analyze()`` (target <= 0.8) on four models: the MLP,
    the grokking transformer, 8 x 512^2 and 4 x 1024^2 at initialisation and with a trained-like
    gap above the bulk (and on the matrices both see);
(c) record bytes / state-dict checkpoint bytes at the same snapshots (target <= 0.12), the quick
    grokking run and the paper-scale one computed from the format;
(d) metrics from a loaded record / recomputed from the weights (target: within 1e-3);
(e) snapshot time against matrix size (128..2048, one matrix and eight) per route with the
    log-log slope; the top-k routes' accuracy against a float64 full SVD;
(f) the memory high-water mark of tracking a ~50M-parameter model, with and without
    ``background=True``.

Run:  python benchmarks/tracking.py [--device cuda] [--quick]
Every ratio pairs its two sides back to back in alternating order and reports the median, so a
noisy machine moves both sides together; the machine's load is printed beside each section.
Not a test: it prints figures and always exits 0.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import statistics
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

import spectral_lab as sl
from spectral_lab import spectra as sp
from spectral_lab.bidiagonal import top_k_svd_bidiagonal
from spectral_lab.experiments.grokking import GrokkingConfig
from spectral_lab.gram import top_k_svd_gram
from spectral_lab.tracker import ROUTES, choose_route


def load() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mlp(widths, device) -> nn.Sequential:
    layers = []
    for d_in, d_out in zip(widths, widths[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(device)


def stack(n: int, width: int, device) -> nn.Sequential:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(n)]).to(device)


def gapped_stack(n: int, width: int, device, directions: int = 20) -> nn.Sequential:
    """``stack`` with a trained-like spectrum: ``directions`` singular values from 10 down to 5
    above the initial bulk (whose edge is near 1.15). At initialisation the top singular values
    are nearly degenerate: the randomized ``values+topk`` route (a GPU's) takes the full SVD
    there and pays off only once a gap opens, while the ``bidiagonal`` route (the CPU's) needs
    no gap; both spectra are measured."""
    model = stack(n, width, device)
    with torch.no_grad():
        for layer in model:
            U = torch.linalg.qr(torch.randn(width, directions, device=device))[0]
            V = torch.linalg.qr(torch.randn(width, directions, device=device))[0]
            strengths = torch.linspace(10, 5, directions, device=device)
            layer.weight += U @ torch.diag(strengths) @ V.T
    return model


def paired(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each callable, run back to back ``repeats`` times in rotating order."""
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times, a, b) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


# ---- (a) training overhead
def train_mlp(device, steps, every, background=False, seed=0):
    sl.seed_everything(seed)
    model = mlp((40, 256, 256, 10), device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    X, y = torch.randn(4000, 40, device=device), torch.randint(0, 10, (4000,), device=device)
    tracker = sl.SpectralTracker(model, every=every, background=background) if every else None
    order = torch.randint(0, 4000, (steps, 32), device=device)
    for step in range(steps):
        idx = order[step]
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.step(step, model, loss=loss)
    if tracker is not None:
        tracker.flush()
    sync(device)
    return tracker


def train_grokking(device, every, background=False, steps=None, keep_weights=False):
    """The quick grokking run's own loop (full batch, AdamW), with or without a tracker."""
    config = GrokkingConfig.quick()
    sl.seed_everything(config.seed)
    model = config.make_model().to(device)
    data = config.make_data().to(device)
    opt = config.make_optimizer(model)
    tracker = None
    if every:
        tracker = sl.SpectralTracker(
            model,
            every=every,
            top_k=config.top_k,
            pairs=model.layer_pairs(),
            background=background,
            keep_weights=keep_weights,
            config=config,
        )
    for step in range(steps or config.steps):
        if tracker is not None:
            tracker.step(step, model)
        loss = nn.functional.cross_entropy(model(data.train_x), data.train_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if tracker is not None:
        tracker.flush()
    sync(device)
    return tracker, model


# ---- (b) one snapshot against its floors
def snapshot_fns(model, device, layers=None):
    tracker = sl.SpectralTracker(model, every=1, layers=layers, pairs=None)
    groups = defaultdict(list)
    for ref in tracker.refs:
        groups[ref.shape].append(ref.view(model).detach().float())
    stacks = [torch.stack(Ws) for Ws in groups.values()]
    steps = iter(range(10**9))

    def snap():
        tracker.snapshot(next(steps), model)
        sync(device)

    def raw():
        for A in stacks:
            torch.linalg.svd(A, full_matrices=False)
        sync(device)

    def values():
        for A in stacks:
            torch.linalg.svdvals(A)
        sync(device)

    def on_host():  # a GPU's weights as background=True decomposes them: copied, the CPU's route
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, os.cpu_count() - 1))  # background's worker: all cores but one
        try:
            for A in stacks:
                A = A.cpu()
                if choose_route(tuple(A.shape[-2:]), 10) == "gram":
                    top_k_svd_gram(A, 10)
                else:
                    torch.linalg.svd(A, full_matrices=False)
        finally:
            torch.set_num_threads(threads)

    fns = {"snapshot": snap, "svd": raw, "svdvals": values}
    if device.type != "cpu":  # the question the first GPU run left: is the host faster?
        fns["on the host"] = on_host
    return tracker, fns


def ww_fn(model, threads: int):
    """WeightWatcher's ``analyze()`` of ``model`` on the CPU (where it runs), its BLAS limited
    to ``threads``."""
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    cpu_model = model.to("cpu")

    def analyze():
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings(), threadpool_limits(threads):
            warnings.simplefilter("ignore")
            return ww.WeightWatcher(model=cpu_model).analyze(plot=False)

    details = analyze()
    return analyze, list(details["name"]) if "name" in details else [], details


def ww_layer_names(model, details) -> list[str]:
    """The tracker's names of the matrices WeightWatcher analysed (matched by shape and order)."""
    ids = set(int(i) for i in details["layer_id"])
    names = []
    for i, (name, module) in enumerate(model.named_modules()):
        if i in ids and hasattr(module, "weight"):
            names.append(name)
    return names


# ---- (c) bytes
def file_bytes(save) -> int:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getbuffer().nbytes


def record_bytes(record) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return record.save(Path(folder) / "r.npz").stat().st_size


def paper_scale_bytes(snapshots: int) -> tuple[int, int]:
    """Record and checkpoint bytes of paper-scale grokking (``GrokkingConfig.full()``), from the
    format: ``snapshots`` snapshots of the full model's shapes with random orthonormal vectors
    and random spectra (no more compressible than real ones), scalars as ``train`` logs them."""
    config = GrokkingConfig.full()
    sl.seed_everything(0)
    model = config.make_model()
    shapes = {ref.name: ref.shape for ref in sl.find_matrices(model)}
    record = sl.RunRecord(shapes, config.top_k, model.layer_pairs())
    rng = np.random.default_rng(0)

    def orthonormal(rows, cols):
        return np.linalg.qr(rng.standard_normal((rows, cols)))[0].astype(np.float32)

    for t in range(snapshots):
        layers = {}
        for name, (m, n) in shapes.items():
            R, k = min(m, n), min(config.top_k, m, n)
            S = np.sort(rng.random(R).astype(np.float32))[::-1].copy()
            layers[name] = {
                "singular_values": S,
                "U": orthonormal(m, k),
                "Vh": orthonormal(n, k).T.copy(),
                "fro_norm": np.float32(rng.random()),
                "norm_eff_rank": np.float32(rng.random()),
                "stable_rank": np.float32(rng.random()),
            }
        names = ("train_loss", "val_loss", "train_acc", "val_acc", "svd_top", "svd_bottom")
        record.append(100 * t, layers, scalars={k: rng.random() for k in names})
    checkpoint = file_bytes(lambda b: torch.save(model.state_dict(), b))
    return record_bytes(record), checkpoint * snapshots


# ---- (e) scaling and accuracy
def slope(sizes, seconds) -> float:
    x, y = np.log(sizes), np.log(seconds)
    return float(np.polyfit(x, y, 1)[0])


def angle(U, U_ref) -> float:
    """Largest angle (radians) between matching columns, signs aligned, in float64."""
    U, U_ref = U.double(), U_ref.double()
    sign = torch.sign((U * U_ref).sum(-2, keepdim=True))
    diff = (U * sign - U_ref).norm(dim=-2)
    return float((2 * torch.arcsin(diff / 2)).max())


# ---- (f) memory
class PeakRSS:
    def __enter__(self):
        self.peak, self.running = self.now(), True
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def now() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def watch(self):
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and sizes (a smoke run)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the training thread"
    )
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: a,b,c,d,e,f")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    device = sl.get_device(args.device)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} cores, {load()}"
    )
    table = []

    if "a" not in skip:
        train_mlp(device, 200, 100)  # warm-up
        t = paired(
            {
                "plain": lambda: train_mlp(device, 2000, None),
                "tracked": lambda: train_mlp(device, 2000, 100),
                "background": lambda: train_mlp(device, 2000, 100, background=True),
            },
            2 * repeats + 1,  # two-second runs: cheap, and three repeats left a 0.08 spread
        )
        table.append(
            (
                "training tracked / bare, MLP 40-256-256-10, every 100",
                "<= 1.05",
                f"{ratio(t, 'tracked', 'plain'):.3f} on the training thread, "
                f"{ratio(t, 'background', 'plain'):.3f} with background=True "
                f"(bare {statistics.median(t['plain']):.2f} s; {load()})",
            )
        )
        print(table[-1])
        grok_steps = 300 if args.quick else None
        t = paired(
            {
                "bare": lambda: train_grokking(device, None, steps=grok_steps),
                "tracked": lambda: train_grokking(device, 25, steps=grok_steps),
                "background": lambda: train_grokking(device, 25, True, steps=grok_steps),
            },
            max(1, repeats - 1),
        )
        table.append(
            (
                "grokking quick, 1,500 steps every 25: tracked / bare",
                "<= 1.05",
                f"{ratio(t, 'tracked', 'bare'):.3f} on the training thread, "
                f"{ratio(t, 'background', 'bare'):.3f} with background=True "
                f"(bare {statistics.median(t['bare']):.1f} s; {load()})",
            )
        )
        print(table[-1])

    if "b" not in skip:
        config = GrokkingConfig.quick()
        sl.seed_everything(0)
        models = {
            "MLP": mlp((40, 256, 256, 10), device),
            "grokking transformer": config.make_model().to(device),
            "8 x 512^2": stack(8, 512, device),
            "4 x 1024^2": stack(4, 1024, device),
            # the same stacks with a gap above the bulk, as in training (the first snapshot,
            # the warm-up below, gives the tracker the spectrum its route is chosen from)
            "8 x 512^2 gapped": gapped_stack(8, 512, device),
            "4 x 1024^2 gapped": gapped_stack(4, 1024, device),
        }
        svd_cells, ww_cells, floor_cells, host_cells = [], [], [], []
        ww_threads = torch.get_num_threads() if device.type == "cpu" else os.cpu_count()
        for label, model in models.items():
            big = "1024" in label
            tracker, fns = snapshot_fns(model, device)
            for fn in fns.values():
                fn()
            # on the CPU, the same one thread as the tracker; against a GPU, every core
            analyze, _, details = ww_fn(model, ww_threads)
            model.to(device)
            both = ww_layer_names(model, details)
            shared = snapshot_fns(model, device, layers=both)[1]["snapshot"] if both else None
            if shared:
                shared()  # its first snapshot: the spectrum the route is chosen from, untimed
            fns = dict(fns, ww=analyze, **({"snapshot on shared": shared} if shared else {}))
            t = paired(fns, 2 if big else max(3, 2 * repeats))
            routes = "/".join(sorted(set(tracker.routes.values())))
            svd_cells.append(f"{label} {ratio(t, 'snapshot', 'svd'):.2f}")
            if "on the host" in t:
                host_cells.append(f"{label} {ratio(t, 'on the host', 'svd'):.2f}")
            floor_cells.append(f"{label} {ratio(t, 'snapshot', 'svdvals'):.2f} [{routes}]")
            shared_ratio = f"{ratio(t, 'snapshot on shared', 'ww'):.2f}" if shared else "n/a"
            ww_cells.append(
                f"{label} {ratio(t, 'snapshot', 'ww'):.2f} (all {len(tracker.refs)} matrices), "
                f"{shared_ratio} (the {len(both)} WeightWatcher analyses)"
            )
            print(label, {k: f"{1e3 * statistics.median(v):.1f} ms" for k, v in t.items()}, load())
        table.append(
            ("one snapshot / raw batched torch.linalg.svd", "<= 1.15", ", ".join(svd_cells))
        )
        table.append(
            (
                "one snapshot / svdvals of the same matrices (the values-only floor)",
                "-",
                ", ".join(floor_cells),
            )
        )
        if host_cells:
            table.append(
                (
                    f"background's decomposition on the host ({max(1, os.cpu_count() - 1)} "
                    f"threads, copy included, the CPU's routes) / raw SVD on {device}",
                    "-",
                    ", ".join(host_cells),
                )
            )
        if device.type == "cpu":
            table.append(("one snapshot / weightwatcher analyze()", "<= 0.8", "; ".join(ww_cells)))
        else:  # issue 17: on a GPU, at least 20 times faster than WeightWatcher on the CPU
            table.append(
                (
                    f"one snapshot on {device.type} / weightwatcher analyze() on the CPU "
                    f"({ww_threads} threads)",
                    "<= 0.05",
                    "; ".join(ww_cells),
                )
            )
        for row in table[-(4 if host_cells else 3) :]:
            print(row)

    if "c" not in skip or "d" not in skip:
        tracker, model = train_grokking(
            device, 25, steps=300 if args.quick else None, keep_weights=True
        )
        record = tracker.record
        T = len(record)
        record_no_weights = sl.RunRecord(
            {n: tuple(s) for n, s in record.meta["shapes"].items()}, record.top_k, record.pairs
        )
        for i, step in enumerate(record.steps):
            record_no_weights.append(
                step,
                {
                    n: {
                        f: record._layers[n][f][i]
                        for f in (
                            "singular_values",
                            "U",
                            "Vh",
                            "fro_norm",
                            "norm_eff_rank",
                            "stable_rank",
                        )
                    }
                    for n in record.layers
                },
            )
        ours = record_bytes(record_no_weights)
        checkpoint = file_bytes(lambda b: torch.save(model.state_dict(), b)) * T
        paper_record, paper_checkpoints = paper_scale_bytes(401)
        table.append(
            (
                "record bytes / state-dict checkpoint bytes, same snapshots",
                "<= 0.12",
                f"grokking quick ({T} snapshots, top_k 10) {ours / 2**20:.2f} MiB / "
                f"{checkpoint / 2**20:.2f} MiB = {ours / checkpoint:.3f}; paper scale "
                f"(p 113, d 128, 40k steps every 100, 401 snapshots) "
                f"{paper_record / 2**20:.1f} MiB / {paper_checkpoints / 2**20:.0f} MiB = "
                f"{paper_record / paper_checkpoints:.3f}",
            )
        )
        print(table[-1])
        with tempfile.TemporaryDirectory() as folder:
            loaded = sl.RunRecord.load(record.save(Path(folder) / "r.npz"))
        worst = defaultdict(float)
        W0 = {n: torch.as_tensor(record.series(n, "weights")[0]) for n in record.layers}
        for i in range(T):
            Ws = {n: torch.as_tensor(record.series(n, "weights")[i]) for n in record.layers}
            for n, W in Ws.items():
                k = min(10, *W.shape)
                for field, exact in (
                    ("singular_values", sp.singular_values(W)),
                    ("fro_norm", torch.linalg.norm(W)),
                    ("norm_eff_rank", sp.normalized_effective_rank(W)),
                    ("stable_rank", sp.stable_rank(W)),
                    ("agreement_first", sp.agreement(W, W0[n], k=k)),
                ):
                    got = loaded.series(n, field)[i]
                    scale = (
                        max(1.0, float(exact.abs().max())) if field != "agreement_first" else 1.0
                    )
                    worst[field] = max(
                        worst[field], float(np.abs(got - exact.numpy()).max()) / scale
                    )
            for j, (a, b) in enumerate(record.pairs):
                exact = sp.alignment(Ws[a], Ws[b], k=10)
                worst["alignment"] = max(
                    worst["alignment"],
                    float(np.abs(loaded.alignment((a, b))[i] - exact.numpy()).max()),
                )
        table.append(
            (
                "metrics from the loaded record vs recomputed from the weights",
                "<= 1e-3",
                ", ".join(f"{f} {v:.1e}" for f, v in worst.items())
                + " (max abs; values relative to s_1)",
            )
        )
        print(table[-1])

    if "e" not in skip:
        print(f"snapshot seconds against matrix size ({load()})")
        sizes = [128, 256, 512, 1024] + ([] if args.quick else [2048])
        for count in (1, 8):
            for route in ROUTES:
                if route in ("bidiagonal", "gram") and device.type != "cpu":
                    continue  # LAPACK on the host
                seconds = []
                for size in sizes:
                    if count == 8 and size == 2048:
                        continue
                    model = stack(count, size, device)
                    with torch.no_grad():  # trained-like spectra: the route's own path is timed
                        for layer in model:
                            layer.weight.copy_(decaying(size, size))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        tracker = sl.SpectralTracker(model, every=1, route=route, pairs=None)
                    tracker.snapshot(0, model)  # the first has no spectrum to predict from
                    start = time.perf_counter()
                    tracker.snapshot(1, model)
                    sync(device)
                    seconds.append(time.perf_counter() - start)
                used = sizes[: len(seconds)]
                print(
                    f"  {count} x n^2, route {route}: "
                    + ", ".join(f"{n}: {s * 1e3:.0f} ms" for n, s in zip(used, seconds))
                    + f"; log-log slope {slope(used, seconds):.2f}"
                )
        print(f"the top-k routes' accuracy against a float64 full SVD ({load()})")
        torch.manual_seed(0)
        routes = {
            "full (float32)": lambda A: (*sp._svd_checked(A), None),
            "values+topk": lambda A: sp.top_k_svd(A, 10),
            "bidiagonal": lambda A: top_k_svd_bidiagonal(A.cpu(), 10),
            "gram": lambda A: top_k_svd_gram(A.cpu(), 10),
        }
        for label, make in (
            ("trained-like spectrum (decay 0.8, gap at k)", lambda m, n: decaying(m, n)),
            ("initialisation (Gaussian)", lambda m, n: torch.randn(m, n) / math.sqrt(n)),
        ):
            for m, n in ((512, 512), (1024, 256)):
                A = make(m, n)[None].to(device)
                Uf, Sf, Vhf = torch.linalg.svd(A.double(), full_matrices=False)
                for route, decompose in routes.items():
                    U, S, Vh, exact = decompose(A)
                    U, S, Vh = U[..., :10].double(), S.double(), Vh[..., :10, :].double()
                    values = float((S.to(Sf.device) - Sf).abs().max() / Sf[..., 0].max())
                    a_u = angle(U.to(Uf.device), Uf[..., :10])
                    a_v = angle(Vh.to(Uf.device).mT, Vhf[..., :10, :].mT)
                    fell = (
                        "" if exact is None else f", fell back to the full SVD: {bool(exact.all())}"
                    )
                    print(
                        f"  {label}, {m}x{n}, {route}: values max |ds| / s_1 {values:.1e}, "
                        f"top-10 angles U {a_u:.1e} V {a_v:.1e} rad{fell}"
                    )

    if "f" not in skip:
        print(f"memory high-water of tracking 192 x 512^2 (50.3M parameters, 201 MB) ({load()})")
        for background in (False, True):
            sl.seed_everything(0)
            model = stack(192, 512, device)
            weights = sum(p.numel() * 4 for p in model.parameters())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tracker = sl.SpectralTracker(model, every=1, pairs=None, background=background)
            snapshots = 3 if background else 1
            with PeakRSS() as rss:
                base = rss.now()
                start = time.perf_counter()
                for step in range(snapshots):
                    tracker.snapshot(step, model)
                    with torch.no_grad():
                        for p in model.parameters():
                            p.mul_(0.999)
                tracker.flush()
            print(
                f"  background={background}: {snapshots} snapshot(s) in "
                f"{time.perf_counter() - start:.0f} s, peak RSS above the model "
                f"{(rss.peak - base) / 2**20:.0f} MiB = {(rss.peak - base) / weights:.2f} x the "
                f"weights (max_in_flight {tracker.max_in_flight}), {load()}"
            )
            del model, tracker

    print("\n| measure | target | now |\n|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


def decaying(m, n):
    R = min(m, n)
    U = torch.linalg.qr(torch.randn(m, R)).Q
    V = torch.linalg.qr(torch.randn(n, R)).Q
    s = torch.cat(
        [10 * 0.8 ** torch.arange(20.0), 0.1 * torch.rand(R - 20).sort(descending=True).values]
    )
    return (U * s) @ V.mT


if __name__ == "__main__":
    main()
