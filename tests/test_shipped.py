"""The run records shipped with the book (spectral_lab.experiments.shipped): they match the code,
rounding passes the staleness check while a change of the science fails it, and a missing,
corrupt or stale record is an error that names the command that regenerates it."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from spectral_lab.cli import main
from spectral_lab.experiments import shipped
from spectral_lab.experiments.architectures import UNetConfig
from spectral_lab.experiments.grokking import PAPER_WEIGHT_DECAYS

TINY = dataclasses.replace(
    shipped.SHIPMENTS["grokking-quick"],
    name="tiny-grokking",
    seeds=(1, 2),
    prefix=25,
    settings={"steps": 50, "top_k": 2},
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # module: before the module's records are made
    """The shipped runs are small: one thread trains them as fast on an idle machine and far
    faster beside another test worker (6 x 100 grokking steps: 11 s against 165 s at load 9).
    Records made with one thread passing the check with two is shown by the rounding test, which
    sets two itself; another processor is the same kind of change."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    """A shipment of two 50-step grokking runs, regenerated once for the module."""
    records = tmp_path_factory.mktemp("shipped") / "records"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(shipped.SHIPMENTS, TINY.name, TINY)
        shipped.regenerate(TINY.name, records=records, progress=False)
    return records


@pytest.fixture()
def tiny(tiny_records, monkeypatch, tmp_path):
    """The tiny shipment, known to the package, in a copy of the test's own."""
    monkeypatch.setitem(shipped.SHIPMENTS, TINY.name, TINY)
    records = tmp_path / "records"
    shutil.copytree(tiny_records, records)
    return TINY, records


def test_regenerated_records_load_with_their_manifest(tiny):
    shipment, records = tiny
    manifest = json.loads((records / "manifest.json").read_text())["records"]
    assert sorted(manifest) == ["tiny-grokking/seed1.npz", "tiny-grokking/seed2.npz"]
    entry = manifest["tiny-grokking/seed1.npz"]
    assert entry["command"] == "python -m spectral_lab records regenerate tiny-grokking --seeds 1"
    assert entry["seed"] == 1 and entry["experiment"] == "grokking" and entry["device"] == "cpu"
    assert entry["bytes"] == (records / "tiny-grokking/seed1.npz").stat().st_size
    assert entry["config"]["steps"] == 50 and entry["torch"] == torch.__version__
    loaded = shipped.load("tiny-grokking", records=records)
    assert sorted(loaded) == [1, 2]
    assert int(loaded[2][""].steps[-1]) == 50 and loaded[2][""].config["seed"] == 2
    assert shipped.describe("tiny-grokking", records) == "quick scale, seeds 1-2, cpu"


def test_rounding_passes_the_staleness_check_and_a_changed_science_fails_it(tiny):
    shipment, records = tiny
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # other reduction orders: the first steps move by rounding only
    try:
        assert shipped.prefix_mismatch("tiny-grokking", 1, records=records) is None
    finally:
        torch.set_num_threads(before)
    changed = shipment.config(1).with_overrides(lr=shipment.config(1).lr * 1.02)
    problem = shipped.prefix_mismatch("tiny-grokking", 1, config=changed, records=records)
    assert problem is not None and "records regenerate tiny-grokking" in problem


def test_a_missing_corrupt_or_stale_record_names_the_command_that_regenerates_it(tiny, monkeypatch):
    shipment, records = tiny
    path = records / "tiny-grokking" / "seed2.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        shipped.ShippedRecordError, match="corrupt.*regenerate tiny-grokking --seeds 2"
    ):
        shipped.load("tiny-grokking", records=records)
    path.unlink()
    with pytest.raises(shipped.ShippedRecordError, match="missing.*regenerate tiny-grokking"):
        shipped.load("tiny-grokking", records=records)
    assert shipped.load("tiny-grokking", [1], records=records)[1][""].config["seed"] == 1
    # the code's preset changes (here: another learning rate): the records are stale
    stale = dataclasses.replace(shipment, settings={**shipment.settings, "lr": 1e-3})
    monkeypatch.setitem(shipped.SHIPMENTS, "tiny-grokking", stale)
    with pytest.raises(shipped.ShippedRecordError, match="differs in lr.*stale"):
        shipped.load("tiny-grokking", [1], records=records)
    with pytest.raises(ValueError, match="ships seeds"):
        shipped.load("tiny-grokking", [7], records=records)
    with pytest.raises(ValueError, match="no shipment"):
        shipped.load("nothing", records=records)


def test_without_a_records_folder_the_runs_are_trained_here(tiny, tmp_path, capsys):
    shipment, records = tiny
    trained = shipped.load("tiny-grokking", [1], records=tmp_path / "elsewhere")
    assert "training tiny-grokking seeds [1] here" in capsys.readouterr().out
    shipped_run = shipped.load("tiny-grokking", [1], records=records)[1][""]
    assert (trained[1][""].norm_eff_rank() == shipped_run.norm_eff_rank()).all()


def test_the_shipped_records_match_the_code():
    """Every shipment's files against the manifest and the preset, and its first seed's first
    steps trained again (the test that fails when a change of the code makes them stale)."""
    for name, shipment in shipped.SHIPMENTS.items():
        if name in shipped.PAPER_SHIPMENTS:  # trained on a GPU when one is lent
            seeds = shipped.available(name)
            if not seeds:
                continue
        else:
            seeds = list(shipment.seeds)
        loaded = shipped.load(name, seeds)
        assert sorted(loaded) == seeds
        assert shipped.prefix_mismatch(name, seeds[0]) is None


def test_a_changed_science_makes_the_shipped_weight_decay_sweep_stale():
    """The sweep's shipment holds six runs a seed: the staleness check trains all six again (the
    test above shows that their rounding passes) and a learning rate 2 % off fails it."""
    shipment = shipped.SHIPMENTS["weight_decay-quick"]
    changed = shipment.config(1).with_overrides(lr=shipment.config(1).lr * 1.02)
    problem = shipped.prefix_mismatch("weight_decay-quick", 1, config=changed)
    assert problem is not None and "records regenerate weight_decay-quick" in problem
    assert "wd_" in problem  # names the run that differs


def test_the_shipped_records_stay_small():
    """25 MB for the quick records the chapters read, 25 MB for the GPU's paper-scale ones."""
    entries = shipped.read_manifest()["records"].values()
    for scale in ("quick", "full"):
        total = sum(e["bytes"] for e in entries if e["scale"] == scale)
        assert total < 25e6, f"{scale} records take {total / 1e6:.1f} MB (the budget is 25 MB)"
    assert all(e["sha256"] and e["command"].startswith("python -m spectral_lab") for e in entries)


def test_a_record_made_on_a_gpu_is_checked_at_its_initialisation_and_loosely_after(tiny):
    """A GPU's record checked on a CPU: the devices' arithmetic drifts apart during training
    (8.7e-3 of s_1 after 100 paper-scale steps, measured), so later snapshots get a loose
    tolerance, but the initialisation must agree: another seed's is caught."""
    shipment, records = tiny
    manifest = shipped.read_manifest(records)
    for entry in manifest["records"].values():
        entry["device"] = "cuda:0"
    shipped._write_manifest(records, manifest)
    assert shipped.prefix_mismatch(TINY.name, 1, records=records) is None
    problem = shipped.prefix_mismatch(TINY.name, 1, config=shipment.config(2), records=records)
    assert problem is not None and "at step 0" in problem
    assert "made on cuda:0, checked on cpu" in problem


def test_the_command_line_lists_and_checks_shipments(capsys):
    assert main(["records", "list"]) == 0
    out = capsys.readouterr().out
    assert "grokking-quick: quick scale, seeds 1-4, cpu" in out
    assert "weight_decay-quick: quick scale, seeds 1-2, cpu" in out
    assert main(["records", "check", "nothing"]) == 2
    assert "no shipment" in capsys.readouterr().err
    assert main(["records", "list", "--seeds", "one"]) == 2
    assert "--seeds expects" in capsys.readouterr().err


def test_a_shipment_copied_elsewhere_is_still_checked(tiny, tmp_path):
    """RECORDS can point elsewhere (SPECTRAL_LAB_RECORDS): the manifest travels with the files."""
    shipment, records = tiny
    copy = tmp_path / "copy"
    shutil.copytree(records, copy)
    assert shipped.load("tiny-grokking", [2], records=copy)[2][""].config["seed"] == 2
    assert shipped.available("tiny-grokking", copy) == [1, 2]
    assert shipped.available("tiny-grokking", tmp_path / "nowhere") == []


def test_paper_shipments_are_the_paper_rows_without_duplicates():
    configs = [s.config(0) for s in shipped.PAPER_SHIPMENTS.values()]
    keys = [tuple(sorted(shipped._comparable(c).items(), key=str)) for c in configs]
    assert len(set(map(str, keys))) == len(keys)  # no run shipped twice under two names
    assert {c.weight_decay for c in configs} == set(PAPER_WEIGHT_DECAYS)
    full = shipped.PAPER_SHIPMENTS["grokking-full"].config(0)
    assert (full.p, full.train_fraction, full.steps, full.weight_decay) == (113, 0.3, 40_000, 1.0)
    assert all(s.scale == "full" for s in shipped.PAPER_SHIPMENTS.values())


def test_a_shipment_with_its_own_prefix_catches_a_changed_science():
    """The lottery shipment trains the first epochs of the dense run under the whole run's cosine
    schedule (a shortened config would follow another one): the shipped seeds pass (the test
    above), and a learning rate changed by 2 % fails."""
    shipment = shipped.SHIPMENTS["lottery-quick"]
    assert shipment.train_prefix is not None
    config = shipment.config(1)
    assert (config.seed, config.data_seed, config.mask_seed) == (1, 1, 1)  # with_seed: every draw
    changed = config.with_overrides(lr=config.lr * 1.02)
    problem = shipped.prefix_mismatch("lottery-quick", 1, config=changed)
    assert problem is not None and "records regenerate lottery-quick" in problem


def test_a_shipment_of_plain_results_round_trips_and_is_checked(tmp_path, monkeypatch):
    """The connectivity shipment holds its grid as a plain result (no pickle) beside the trunk's
    record; the manifest says which is which, the grid loads back without the networks' weights,
    and the trunk's record carries the staleness check."""
    tiny = dataclasses.replace(
        shipped.SHIPMENTS["connectivity-quick"],
        name="tiny-connectivity",
        seeds=(1,),
        settings=dict(epochs=1, hidden=(16, 16), split_steps=(0, 31), etas=(1.0,), alphas=3),
    )
    monkeypatch.setitem(shipped.SHIPMENTS, tiny.name, tiny)
    records = tmp_path / "records"
    shipped.regenerate(tiny.name, records=records, progress=False)
    manifest = shipped.read_manifest(records)["records"]
    formats = {e["label"]: e["format"] for e in manifest.values()}
    assert formats == {"grid": "result", "trunk": "run_record"}
    grid = shipped.load(tiny.name, records=records)[1]["grid"]
    assert type(grid).__name__ == "ConnectivityResult"
    assert {p.kind for p in grid.pairs} == {"split", "perturbed"}  # no cross pairs: no other trunks
    assert all(p.states == ({}, {}) for p in grid.pairs)
    assert grid.by_split()["split_step"].tolist() == [0, 31]
    assert shipped.prefix_mismatch(tiny.name, 1, records=records) is None
    changed = tiny.config(1).with_overrides(lr=tiny.config(1).lr * 1.02)
    problem = shipped.prefix_mismatch(tiny.name, 1, config=changed, records=records)
    assert problem is not None and "trunk" in problem


def test_a_changed_architecture_fails_the_staleness_check(monkeypatch):
    """architectures-quick ships four runs per seed; its staleness check trains the first 50 steps
    of each on its whole schedule (``ChapterRuns.train(until=)``; the shipped seeds pass it in
    test_the_shipped_records_match_the_code). The LSTM's
    learning rate changed by 2 % fails it, and a changed preset of any one kind makes the records
    stale when they are loaded."""
    name = "architectures-quick"
    config = shipped.SHIPMENTS[name].config(2)
    lstm = config.runs["lstm"]
    changed = dataclasses.replace(
        config, runs={**config.runs, "lstm": lstm.with_overrides(lr=lstm.lr * 1.02)}
    )
    problem = shipped.prefix_mismatch(name, 2, config=changed)
    assert problem is not None and "seed 2 lstm" in problem and f"regenerate {name}" in problem
    quick = UNetConfig.quick
    monkeypatch.setattr(UNetConfig, "quick", lambda: quick().with_overrides(beta_end=0.04))
    with pytest.raises(shipped.ShippedRecordError, match=r"differs in runs.*stale"):
        shipped.load(name, [1])
