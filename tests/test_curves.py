import math

import numpy as np
import pytest

from spectral_lab.curves import (
    curve,
    final_norm_eff_rank,
    halfway_step,
    mean_norm_eff_rank,
    rank_drop_step,
    rank_fall_phases,
    time_to_generalize,
    total_weight_norm,
)
from spectral_lab.experiments.weight_decay import sweep_summary
from spectral_lab.record import RunRecord


def fake_record(ranks, norms, val_acc, weight_decay=1.0, history=None) -> RunRecord:
    """A record of two layers with the given NormEffRank / Frobenius norm rows, one per snapshot."""
    record = RunRecord({"a": (4, 4), "b": (4, 2)}, top_k=1, config={"weight_decay": weight_decay})
    for i, (rank, norm) in enumerate(zip(ranks, norms)):
        layers = {
            name: {"norm_eff_rank": np.float32(r), "fro_norm": np.float32(n)}
            for name, r, n in zip(("a", "b"), rank, norm)
        }
        record.append(
            10 * i,
            layers,
            scalars={
                "val_acc": val_acc[i],
                "val_loss": 1 - val_acc[i],
                "val_loss_svd_top": 2 - val_acc[i],
                "val_loss_svd_bottom": 5.0,
            },
        )
    if history is not None:
        record.meta["history"] = history
    return record


RANKS = [(1.0, 0.8), (0.9, 0.7), (0.5, 0.3), (0.4, 0.2)]
NORMS = [(3.0, 4.0), (3.0, 4.0), (6.0, 8.0), (0.0, 1.0)]
VAL_ACC = [0.0, 0.2, 0.96, 1.0]


def test_halfway_step():
    assert halfway_step([0, 1, 2, 3], [1.0, 0.8, 0.4, 0.0]) == 2  # first value <= 0.5
    assert halfway_step([0, 1, 2, 3], [0.0, 0.5, 0.6, 1.0]) == 1  # first value >= 0.5
    assert math.isnan(halfway_step([0, 1], [2.0, 2.0]))
    with pytest.raises(ValueError, match="same length"):
        halfway_step([0, 1], [1.0])


def test_rank_helpers():
    record = fake_record(RANKS, NORMS, VAL_ACC)
    np.testing.assert_allclose(mean_norm_eff_rank(record), [0.9, 0.8, 0.4, 0.3])
    assert (
        rank_drop_step(record) == 20
    )  # mean falls from 0.9 to 0.3: half way (0.6) first passed at step 20
    assert final_norm_eff_rank(record) == pytest.approx({"a": 0.4, "b": 0.2})
    np.testing.assert_allclose(total_weight_norm(record), [5.0, 5.0, 10.0, 1.0])  # 3-4-5 triangles


def test_time_to_generalize_prefers_the_finer_history():
    record = fake_record(RANKS, NORMS, VAL_ACC)
    assert time_to_generalize(record) == 20
    assert math.isnan(time_to_generalize(record, threshold=1.01))
    record.meta["history"] = {"step": [0, 5, 10, 15, 20], "val_acc": [0.0, 0.1, 0.5, 0.97, 1.0]}
    assert time_to_generalize(record) == 15
    steps, values = curve(record, "val_loss")  # not in the history: the snapshots
    assert steps.tolist() == [0, 10, 20, 30] and values[-1] == 0.0
    with pytest.raises(KeyError, match="no scalar 'train_acc'"):
        curve(record, "train_acc")


def test_sweep_summary_columns():
    records = [fake_record(RANKS, NORMS, VAL_ACC, weight_decay=wd) for wd in (0.0, 1.0)]
    records[1] = fake_record(
        [(r * 0.5, s * 0.5) for r, s in RANKS], NORMS, [0.0, 0.0, 0.0, 0.5], weight_decay=1.0
    )
    summary = sweep_summary(records)
    assert summary["weight_decay"].tolist() == [0.0, 1.0]
    assert summary["layers"].tolist() == ["a", "b"]
    np.testing.assert_allclose(summary["norm_eff_rank"], [[0.4, 0.2], [0.2, 0.1]])
    np.testing.assert_allclose(summary["mean_norm_eff_rank"], [0.3, 0.15])
    np.testing.assert_allclose(summary["weight_norm"], [1.0, 1.0])
    assert summary["time_to_generalize"][0] == 20 and math.isnan(summary["time_to_generalize"][1])
    np.testing.assert_allclose(summary["val_loss"], [0.0, 0.5])
    np.testing.assert_allclose(summary["val_loss_svd_top"], [1.0, 1.5])
    with pytest.raises(ValueError, match="at least one"):
        sweep_summary([])


def phase_record(rank, train_acc, val_acc) -> RunRecord:
    record = RunRecord({"a": (4, 4)}, top_k=1, config={})
    for i, (r, fit, val) in enumerate(zip(rank, train_acc, val_acc)):
        layers = {"a": {"norm_eff_rank": np.float32(r), "fro_norm": np.float32(1.0)}}
        record.append(100 * i, layers, scalars={"train_acc": fit, "val_acc": val})
    return record


def test_rank_fall_phases_finds_two_phases_with_a_rest_between():
    # the rank falls 1.0 -> 0.7 while fitting (by step 200), rests to step 500, falls
    # 0.7 -> 0.3 while the validation accuracy jumps (500 -> 700)
    rank = [1.0, 0.85, 0.7, 0.69, 0.69, 0.68, 0.5, 0.32, 0.3]
    train = [0.1, 0.6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    val = [0.0, 0.0, 0.02, 0.02, 0.03, 0.2, 0.6, 0.99, 1.0]
    phases = rank_fall_phases(phase_record(rank, train, val), window=2)
    assert phases.fit == 200 and phases.jump == (500, 700) and phases.rest == (200, 400)
    assert phases.rate["fitting"] == pytest.approx(1000 * 0.3 / 200, rel=1e-5)
    assert phases.rate["rest"] == pytest.approx(1000 * 0.01 / 200, rel=1e-4)
    assert phases.rate["jump"] == pytest.approx(1000 * 0.36 / 200, rel=1e-5)
    assert phases.two_phase and phases.falls_during_jump


def test_rank_fall_phases_one_phase_when_the_rank_falls_through_the_jump():
    rank = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    train = [0.1, 0.6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    val = [0.0, 0.1, 0.2, 0.3, 0.5, 0.95, 1.0, 1.0]
    phases = rank_fall_phases(phase_record(rank, train, val), window=2)
    assert phases.fit == 200 and phases.jump == (300, 500)
    assert phases.rest is None and not phases.two_phase and phases.falls_during_jump
    with pytest.raises(ValueError, match="never reaches training accuracy"):
        rank_fall_phases(phase_record(rank, [0.1] * 8, val), window=2)
    with pytest.raises(ValueError, match="smaller window"):
        rank_fall_phases(phase_record(rank, train, val), window=6)
