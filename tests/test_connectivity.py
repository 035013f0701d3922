import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spectral_lab import locks
from spectral_lab.experiments import connectivity
from spectral_lab.experiments.classifier import ClassifierConfig
from spectral_lab.experiments.connectivity import (
    ConnectivityConfig,
    ConnectivityResult,
    JobResult,
    PairResult,
    connectivity_outputs,
    perturb,
    run_connectivity,
)
from spectral_lab.locks import OutputLocked
from spectral_lab.models import MLP
from spectral_lab.sweeps import StoreError, load_result, save_result


@torch.no_grad()
def test_perturbation_keeps_norms_and_follows_the_formula():
    torch.manual_seed(0)
    model = MLP((6, 16, 16, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eta, seed = 0.7, 5
    out = perturb(model, eta, seed)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the original model changed at {k}"
    generator = torch.Generator().manual_seed(seed)
    for name in ("fc1", "fc2"):  # every matrix but the last, in registration order
        W = before[f"{name}.weight"].double()
        W_new = getattr(out, name).weight.detach().double()
        assert torch.linalg.norm(W_new) == pytest.approx(
            float(torch.linalg.norm(W)), rel=1e-6
        )  # norm identity
        eps = torch.randn(W.shape, generator=generator, dtype=torch.float64)
        moved = W + eta * torch.linalg.norm(W) * eps / torch.linalg.norm(eps)
        torch.testing.assert_close(
            W_new, torch.linalg.norm(W) * moved / torch.linalg.norm(moved), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            getattr(out, name).bias, getattr(model, name).bias, rtol=0, atol=0
        )
    torch.testing.assert_close(
        out.fc3.weight, model.fc3.weight, rtol=0, atol=0
    )  # the output layer is spared


@torch.no_grad()
def test_perturbation_seeds_and_zero():
    torch.manual_seed(0)
    model = MLP((6, 16, 16, 3))
    torch.testing.assert_close(
        perturb(model, 0.0, 1).fc1.weight, model.fc1.weight, rtol=1e-6, atol=1e-7
    )
    assert torch.equal(perturb(model, 1.0, 3).fc2.weight, perturb(model, 1.0, 3).fc2.weight)
    assert not torch.allclose(perturb(model, 1.0, 3).fc2.weight, perturb(model, 1.0, 4).fc2.weight)
    # for a large matrix the noise is almost orthogonal to W: cos(W, W') ~ 1 / sqrt(1 + eta^2)
    big = MLP((256, 256, 10))
    W, W_new = big.fc1.weight.detach().double(), perturb(big, 2.0, 0).fc1.weight.detach().double()
    cos = float((W * W_new).sum() / (torch.linalg.norm(W) * torch.linalg.norm(W_new)))
    assert cos == pytest.approx(1 / math.sqrt(5), abs=0.02)
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="eta"):
            perturb(model, bad, 0)


# ---- the config ----------------------------------------------------------------------------------
def test_config_presets_and_validation():
    quick, full = ConnectivityConfig.quick(), ConnectivityConfig.full()
    assert set(ConnectivityConfig.presets()) == {"quick", "full"}
    assert quick.perturbed_split == quick.split_steps[-1] and full.model == "cnn"
    recipe = quick.training_config()
    assert (
        type(recipe) is ClassifierConfig and recipe.epochs == quick.epochs and recipe.lr == quick.lr
    )
    for bad in (
        dict(branch_seeds=(1,)),
        dict(branch_seeds=(1, 1)),
        dict(split_steps=(125, 31)),
        dict(etas=(0.0,)),
        dict(perturb_step=7),
        dict(trunk_seeds=(0,), other_seeds=(0,)),
        dict(alphas=2),
        dict(label_noise=0.5),
    ):
        with pytest.raises(ValueError):
            ConnectivityConfig(**bad)


def test_with_seed_moves_every_seed_and_keeps_the_preset():
    quick = ConnectivityConfig.quick()
    assert quick.with_seed(0) == quick
    again = quick.with_seed(2)
    assert again.preset == "quick" and again.split_steps == quick.split_steps
    assert again.trunk_seeds == (200,) and again.branch_seeds == (201, 202)
    assert again.other_seeds == (201, 202) and again.data_seed == quick.data_seed + 200
    drawn = {*again.trunk_seeds, *again.branch_seeds, *again.other_seeds, again.data_seed}
    used = {*quick.trunk_seeds, *quick.branch_seeds, *quick.other_seeds, quick.data_seed}
    assert not drawn & used  # a replicate shares no seed with seed 0
    with pytest.raises(ValueError, match="non-negative integer"):
        quick.with_seed(-1)


# ---- the claims at a reduced scale ---------------------------------------------------------------
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """MNIST-1D, MLP 40-128-128-10, 8 epochs (1,000 steps): split at 0 and 200, eta 4, one other
    init (~5 s); run as the LMC chapter's full mode does, with a store (``runs/lmc``)."""
    torch.set_num_threads(1)
    config = ConnectivityConfig(
        preset="test",
        epochs=8,
        hidden=(128, 128),
        split_steps=(0, 200),
        other_seeds=(1,),
        etas=(4.0,),
        device="cpu",
    )
    store = tmp_path_factory.mktemp("runs") / "lmc"
    return run_connectivity(config, progress=False, out_dir=store), store


@pytest.fixture(scope="module")
def small_run(small_store):
    return small_store[0]


def test_later_split_lower_barrier_higher_sva(small_run):
    table = small_run.by_split()
    np.testing.assert_array_equal(table["split_step"], [0, 200])
    assert table["loss_barrier"][1] < 0.5 * table["loss_barrier"][0]
    assert table["error_barrier"][1] < table["error_barrier"][0]
    for name in small_run.layers:
        assert table[f"sva:{name}"][1] > table[f"sva:{name}"][0], name


def test_perturbation_raises_the_barrier_and_lowers_sva(small_run):
    table = small_run.by_eta()
    np.testing.assert_array_equal(table["eta"], [0.0, 4.0])
    assert table["loss_barrier"][1] > table["loss_barrier"][0] + 0.5
    mean_sva = np.mean([table[f"sva:{name}"] for name in small_run.layers], axis=0)
    assert mean_sva[1] < mean_sva[0] - 0.1


def test_different_initialisations_are_not_connected(small_run):
    cross = small_run.select("cross")
    assert len(cross) == 1
    same_trunk = small_run.select("split", split_step=0)[0]
    assert cross[0].loss_barrier > same_trunk.loss_barrier
    assert all(cross[0].sva_score(name) < 0.15 for name in small_run.layers)


def test_top_half_pruning_loses_far_less_than_bottom_half(small_run):
    for name, losses in small_run.pruning.items():
        full, top, bottom = (losses[part]["train_loss"] for part in ("full", "top", "bottom"))
        assert top - full < 0.1 * (bottom - full), name
        assert losses["bottom"]["test_acc"] < 0.2  # about chance (0.1)


# ---- the grid as jobs: any engine, resumable
# -------------------------------------------------------
def test_the_grid_splits_into_independent_jobs():
    from spectral_lab.experiments.connectivity import connectivity_jobs

    config = ConnectivityConfig(trunk_seeds=(0, 5), split_steps=(0, 31, 125), other_seeds=(1,))
    jobs = connectivity_jobs(config)
    assert [(j.trunk_seed, j.split_step, j.other_seed) for j in jobs] == [
        (0, 0, None),
        (0, 31, None),
        (0, 125, None),
        (5, 0, None),
        (5, 31, None),
        (5, 125, None),
        (None, None, 1),
    ]
    assert len(connectivity_jobs(config, parts=("split",))) == 6
    with pytest.raises(ValueError, match="must include 'split'"):
        connectivity_jobs(config, parts=("cross",))


def test_local_engine_and_resume_give_the_serial_result(small_run, tmp_path):
    """Two Dask workers, then the store read back: the same barriers and SVA as the serial run."""
    pytest.importorskip(
        "distributed",
        reason='the local engine needs the [dask] extra: pip install -e ".[dask]"',
    )
    config = ConnectivityConfig.from_dict(small_run.config)

    def table(result):
        return {
            kind: [
                (p.label, p.loss_barrier, p.error_barrier, [p.sva_score(n) for n in result.layers])
                for p in result.select(kind)
            ]
            for kind in ("split", "cross", "perturbed")
        }

    local = run_connectivity(config, progress=False, engine="local", workers=2, out_dir=tmp_path)
    assert table(local) == table(small_run) and local.pruning == small_run.pruning
    assert len(list(tmp_path.glob("*.npz"))) == 3  # trunk 0 at splits 0 and 200, the other init
    again = run_connectivity(
        config, progress=False, engine="local", workers=2, out_dir=tmp_path
    )  # all stored
    assert table(again) == table(small_run)


# ---- the store: no pickles, bit-identical results -----------------------------------------------
def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    def raw(t):
        return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()

    return a.dtype == b.dtype and a.shape == b.shape and raw(a) == raw(b)


def assert_same_pair(a: PairResult, b: PairResult) -> None:
    assert (a.kind, a.label, a.split_step, a.trunk_seed, a.eta) == (
        b.kind,
        b.label,
        b.split_step,
        b.trunk_seed,
        b.eta,
    )
    for name in ("alphas", "train_loss", "train_error", "test_loss", "test_error"):
        x, y = getattr(a.curve, name), getattr(b.curve, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert list(a.sva) == list(b.sva)
    for layer in a.sva:
        assert a.sva[layer].dtype == b.sva[layer].dtype
        assert a.sva[layer].tobytes() == b.sva[layer].tobytes(), layer
    assert type(b.states) is tuple and len(a.states) == len(b.states) == 2
    for state_a, state_b in zip(a.states, b.states):
        assert list(state_a) == list(state_b)
        assert all(same_bits(state_a[k], state_b[k]) for k in state_a)


def assert_same_result(a: ConnectivityResult, b: ConnectivityResult) -> None:
    assert a.config == b.config and a.layers == b.layers and a.pruning == b.pruning
    assert len(a.pairs) == len(b.pairs)
    for x, y in zip(a.pairs, b.pairs):
        assert_same_pair(x, y)


def test_job_results_are_stored_without_pickles_and_read_back_bit_for_bit(small_store):
    result, store = small_store
    config = ConnectivityConfig.from_dict(result.config)
    paths = connectivity_outputs(config, store)
    assert sorted(p.name for p in store.iterdir()) == sorted(p.name for p in paths)
    jobs = [load_result(path) for path in paths]
    assert all(isinstance(job, JobResult) for job in jobs)
    stored_pairs = [pair for job in jobs for pair in job.pairs]
    split_and_perturbed = [p for p in result.pairs if p.kind != "cross"]
    assert len(stored_pairs) == len(split_and_perturbed)
    for a, b in zip(split_and_perturbed, stored_pairs):
        assert_same_pair(a, b)
    cross = result.select("cross")[0]  # built from the endpoints stored with the jobs
    endpoints = [job.endpoint for job in jobs if job.endpoint is not None]
    assert len(endpoints) == 2
    for state, stored in zip(cross.states, endpoints):
        assert all(same_bits(state[k], stored[k]) for k in state)


def test_a_connectivity_result_round_trips(small_run, tmp_path):
    back = load_result(save_result(tmp_path / "result.npz", small_run))
    assert isinstance(back, ConnectivityResult)
    assert_same_result(back, small_run)
    assert (
        back.by_split()["loss_barrier"].tobytes() == small_run.by_split()["loss_barrier"].tobytes()
    )


def test_the_chapters_full_mode_reads_the_store_without_training(small_store, monkeypatch):
    """What book/connectivity.ipynb does in full mode: run_connectivity(..., out_dir=runs/lmc)."""
    result, store = small_store

    def no_training(job):
        raise AssertionError(f"{job} was trained although its result is in the store")

    monkeypatch.setattr(connectivity, "run_job", no_training)
    config = ConnectivityConfig.from_dict(result.config)
    assert_same_result(run_connectivity(config, progress=False, out_dir=store), result)


class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_old_pickled_store_is_refused_unread(small_store, tmp_path):
    result, store = small_store
    config = ConnectivityConfig.from_dict(result.config)
    copy = tmp_path / "lmc"
    shutil.copytree(store, copy)
    target = connectivity_outputs(config, copy)[1]
    target.unlink()
    marker = tmp_path / "pwned"
    target.with_suffix(".pkl").write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(StoreError, match="refused, because loading a pickle runs code") as info:
        run_connectivity(config, progress=False, out_dir=copy)
    assert str(target.with_suffix(".pkl")) in str(info.value) and not marker.exists()


HOLD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("locks", sys.argv[1])
locks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
with locks.output_lock(sys.argv[2], folder=True):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_overwriting_a_store_another_process_holds_deletes_nothing(small_store, tmp_path):
    """``run connectivity --overwrite`` takes the store's lock before it deletes old results."""
    result, store = small_store
    config = ConnectivityConfig.from_dict(result.config)
    copy = tmp_path / "lmc"
    shutil.copytree(store, copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, locks.__file__, str(copy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=f"process {holder.pid}"):
            connectivity.EXPERIMENT.run(config, copy, resume=False)
        assert all(path.exists() for path in connectivity_outputs(config, copy))
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
