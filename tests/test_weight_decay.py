from dataclasses import replace

import numpy as np
import pytest

from spectral_lab.experiments.weight_decay import (
    WeightDecaySweep,
    load_or_run_sweep,
    run_weight_decay_sweep,
    sweep_path,
    sweep_summary,
)

TINY = replace(
    WeightDecaySweep.quick(),
    preset="tiny",
    p=7,
    d_model=8,
    n_heads=2,
    d_mlp=16,
    steps=20,
    eval_every=5,
    track_every=10,
    checkpoint_every=10,
    weight_decays=(0.0, 0.5),
)


def test_one_record_per_weight_decay_in_order(tmp_path):
    records = run_weight_decay_sweep(TINY, out=tmp_path / "sweep", progress=False)
    assert [r.config["weight_decay"] for r in records] == [0.0, 0.5]
    assert [r.meta["preset"] for r in records] == ["tiny/wd=0", "tiny/wd=0.5"]
    names = sorted(path.name for path in (tmp_path / "sweep").iterdir())
    assert [name.split("-")[0] for name in names] == [
        "wd_0",
        "wd_0.5",
    ]  # readable, and keyed by the config
    assert names == sorted(sweep_path(tmp_path, c).name for c in TINY.configs())


def test_resume_reads_finished_runs_and_starts_missing_ones(tmp_path):
    out = tmp_path / "sweep"
    first = run_weight_decay_sweep(TINY, out=out, progress=False)
    sweep_path(out, TINY.configs()[1]).unlink()  # as if the sweep had stopped before its second run
    again = run_weight_decay_sweep(TINY, out=out, resume=True, progress=False)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.norm_eff_rank(), b.norm_eff_rank())


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file.npz").write_text("")
    with pytest.raises(ValueError, match="into a folder"):
        run_weight_decay_sweep(TINY, out=tmp_path / "file.npz", progress=False)


def test_load_or_run_sweep_is_all_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    run_weight_decay_sweep(TINY, out=out, progress=False)
    loaded = load_or_run_sweep(TINY, out)
    assert [r.config["weight_decay"] for r in loaded] == [0.0, 0.5]

    assert (
        load_or_run_sweep(TINY.with_overrides(lr=2e-3), out, progress=False)[0].config["lr"] == 2e-3
    )  # not read

    # the full sweep is not there: the fallback runs in place and nothing is written
    before = sorted(p.name for p in out.iterdir())
    records = load_or_run_sweep(WeightDecaySweep.full(), out, fallback=TINY, progress=False)
    assert [r.meta["preset"] for r in records] == ["tiny/wd=0", "tiny/wd=0.5"]
    assert sorted(p.name for p in out.iterdir()) == before


# ---- the claim at quick scale (SPEC section 2, "Weight decay")
# -------------------------------------
def test_more_weight_decay_lower_final_rank_short_sweep():
    """Four weight decays, a third of the quick budget: the ordering is already there."""
    sweep = WeightDecaySweep.quick().with_overrides(weight_decays=(0.0, 0.1, 1.0, 3.0), steps=500)
    summary = sweep_summary(run_weight_decay_sweep(sweep, progress=False))
    assert np.all(np.diff(summary["mean_norm_eff_rank"]) < 0), summary["mean_norm_eff_rank"]
    assert summary["mean_norm_eff_rank"][-1] < 0.75 * summary["mean_norm_eff_rank"][0]


@pytest.mark.slow
def test_quick_weight_decay_sweep():
    summary = sweep_summary(run_weight_decay_sweep(WeightDecaySweep.quick(), progress=False))
    rank = summary["mean_norm_eff_rank"]  # weight decays 0, 1e-3, 1e-2, 0.1, 1, 3
    assert np.all(np.diff(rank) < 0.01), rank  # never rises by more than noise...
    assert rank[-1] < rank[-2] < rank[3] < rank[0] - 0.03  # ...and falls clearly once wd matters
    assert rank[-2] < rank[0] - 0.3
    assert np.isnan(summary["time_to_generalize"][0]) and summary["time_to_generalize"][-2] < 1000
    gap = (
        summary["val_loss_svd_top"] - summary["val_loss"]
    )  # pruning the bottom half costs less with more wd
    assert gap[-2] < 0.1 * gap[0]
