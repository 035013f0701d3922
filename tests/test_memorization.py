"""Tests for spectral_lab.experiments.memorization: the config, the runs, the analyses, and the
chapter's claims at small scale."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from spectral_lab.experiments.classifier import ClassifierConfig
from spectral_lab.experiments.memorization import (
    MemorizationConfig,
    fitted_step,
    memorization_outputs,
    middle_layers,
    rank_at_fit,
    record_path,
    run_memorization,
    settling_steps,
)
from spectral_lab.record import LAYER_FIELDS, RunRecord
from spectral_lab.spectra import diagonal_mean


# ---- the config
# ------------------------------------------------------------------------------------
def test_quick_is_the_papers_recipe_on_mnist1d():
    config = MemorizationConfig.quick()
    assert config == MemorizationConfig(preset="quick")
    assert (config.dataset, config.hidden, config.batch_size) == ("mnist1d", (256, 256), 128)
    assert (config.momentum, config.weight_decay, config.schedule) == (0.9, 0.0, "constant")
    assert config.label_fractions == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert config.total_steps(4000) == 3100


def test_full_uses_the_papers_four_layer_mlp():
    config = MemorizationConfig.full()
    assert (
        config.hidden == (256, 256, 256) and config.epochs == 300 and config.schedule == "constant"
    )
    assert config.scale == "full" and MemorizationConfig.quick().scale == "quick"
    assert set(MemorizationConfig.presets()) == {"quick", "full"}
    assert MemorizationConfig.from_preset("full") == config


def test_configs_differ_only_in_the_labels():
    config = MemorizationConfig.quick()
    runs = config.configs()
    assert [c.label_noise for c in runs] == list(config.label_fractions)
    assert all(type(c) is ClassifierConfig for c in runs)
    for run in runs:
        assert set(run.differences(runs[0], ignore=())) <= {"label_noise", "preset"}
        assert run.lr == config.lr and run.hidden == config.hidden and run.seed == config.seed
    assert runs[-1].preset == "quick/labels=1"
    assert [c.label_noise for c in config.configs([1.0, 0.0])] == [1.0, 0.0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(label_fractions=()), "at least one fraction"),
        (dict(label_fractions=(0.0, 1.5)), r"\[0, 1\]"),
        (dict(label_fractions=(-0.1,)), r"\[0, 1\]"),
        (dict(label_fractions=(0.5, 0.5)), "repeat"),
        (dict(label_noise=0.5), "per run"),
        (dict(lr=0.0), "lr"),
        (dict(schedule="step"), "schedule"),
    ],
)
def test_bad_configs_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        MemorizationConfig(**overrides)


def test_fractions_must_come_from_the_config():
    config = MemorizationConfig.quick()
    with pytest.raises(ValueError, match="subset"):
        config.configs([0.3])
    with pytest.raises(ValueError, match="subset"):
        run_memorization(config, fractions=[])
    with pytest.raises(TypeError, match="MemorizationConfig"):
        run_memorization(ClassifierConfig.quick())


def test_config_round_trips_through_a_dict():
    config = MemorizationConfig.full()
    assert MemorizationConfig.from_dict(asdict(config)) == config
    assert MemorizationConfig().with_overrides(label_fractions="0,1").label_fractions == (0.0, 1.0)


# ---- the runs
# -------------------------------------------------------------------------------------
TINY = MemorizationConfig(
    preset="tiny",
    dataset="digits",
    hidden=(16, 16),
    epochs=2,
    batch_size=128,
    eval_every=5,
    track_every=5,
    label_fractions=(0.0, 1.0),
    device="cpu",
)


def test_runs_share_everything_but_the_labels(tmp_path):
    records = run_memorization(TINY, out=tmp_path, progress=False)
    assert list(records) == [0.0, 1.0]
    true, random = records[0.0], records[1.0]
    assert true.layers == ["fc1", "fc2", "fc3"] and true.pairs == [("fc1", "fc2"), ("fc2", "fc3")]
    # same initialisation: identical spectra at step 0, different ones after
    for name in true.layers:
        assert np.array_equal(true.singular_values(name)[0], random.singular_values(name)[0])
    assert not np.allclose(true.singular_values("fc2")[-1], random.singular_values("fc2")[-1])
    assert random.config["label_noise"] == 1.0 and true.config["label_noise"] == 0.0
    assert true.meta["experiment"] == "memorization" and true.meta["label_fractions"] == [0.0, 1.0]
    names = [p.name for p in memorization_outputs(TINY, tmp_path)]
    assert [name.split("-")[0] for name in names] == ["labels_0", "labels_1"]
    assert all(name.endswith(".npz") and len(name.split("-")[1]) == 16 + 4 for name in names)
    assert all(p.exists() for p in memorization_outputs(TINY, tmp_path))


def test_saved_runs_are_reused_only_when_they_match(tmp_path):
    first = run_memorization(TINY, fractions=[1.0], out=tmp_path, progress=False)[1.0]
    stamp = record_path(tmp_path, TINY, 1.0).stat().st_mtime_ns
    again = run_memorization(TINY, fractions=[1.0], out=tmp_path, progress=False)[1.0]
    assert record_path(tmp_path, TINY, 1.0).stat().st_mtime_ns == stamp  # loaded, not retrained
    assert np.array_equal(again.singular_values("fc2"), first.singular_values("fc2"))
    other = TINY.with_overrides(lr=0.05)
    retrained = run_memorization(other, fractions=[1.0], out=tmp_path, progress=False)[1.0]
    # a different config is trained anew, into its own file; the first one is left as it was
    assert retrained.config["lr"] == 0.05
    assert RunRecord.load(record_path(tmp_path, other, 1.0)).config["lr"] == 0.05
    assert record_path(tmp_path, TINY, 1.0).stat().st_mtime_ns == stamp


# ---- the analyses on records whose answer is known
# --------------------------------------------------
def _record(directions: dict[int, tuple[int, int]], train_acc=None) -> RunRecord:
    """A one-layer record, 4x4, top_k 2: at each step, which basis vectors are the two top singular
    vectors."""
    record = RunRecord({"w": (4, 4)}, top_k=2)
    eye = np.eye(4)
    for t, step in enumerate(sorted(directions)):
        first, second = directions[step]
        U = eye[:, [first, second]]  # (4, 2)
        fields = {
            "singular_values": np.array([3.0, 2.0, 1.0, 0.5]),
            "U": U,
            "Vh": U.T,
            "fro_norm": 1.0,
            "norm_eff_rank": 0.5,
            "stable_rank": 1.0,
            "agreement_first": np.eye(2),
        }
        assert set(fields) == set(LAYER_FIELDS)
        scalars = None if train_acc is None else {"train_acc": train_acc[t]}
        record.append(step, {"w": fields}, scalars=scalars)
    return record


def test_settling_steps_on_known_vectors():
    # rank 1 reaches its final direction e0 at step 10, rank 2 its final e1 at step 30 (after a
    # visit at 10)
    record = _record({0: (2, 3), 10: (0, 1), 20: (0, 3), 30: (0, 1), 40: (0, 1)})
    assert settling_steps(record, "w").tolist() == [10, 30]
    assert settling_steps(record, "w", k=1).tolist() == [10]
    S = record.agreement_with("final")["w"]
    assert S[0, 0, 0] == 0.0 and S[-1, 0, 0] == 1.0  # the definition the steps are read from


def test_settling_steps_reject_bad_arguments():
    record = _record({0: (0, 1), 10: (0, 1)})
    assert settling_steps(record, "w").tolist() == [0, 0]  # settled from the start
    for threshold in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            settling_steps(record, "w", threshold=threshold)
    with pytest.raises(ValueError, match="k must"):
        settling_steps(record, "w", k=3)
    with pytest.raises(KeyError, match="no layer"):
        settling_steps(record, "v")


def test_fitted_step_and_rank_at_fit():
    record = _record({0: (0, 1), 10: (0, 1), 20: (0, 1)}, train_acc=[0.1, 0.995, 1.0])
    assert fitted_step(record) == 10 and fitted_step(record, 1.0) == 20
    assert rank_at_fit(record, layers=["w"]) == 0.5
    with pytest.raises(ValueError, match="never reaches"):
        _ = fitted_step(_record({0: (0, 1), 10: (0, 1)}, train_acc=[0.1, 0.5]))
    with pytest.raises(ValueError, match="no train_acc"):
        fitted_step(_record({0: (0, 1)}))
    with pytest.raises(ValueError, match="threshold"):
        fitted_step(record, 0.0)
    with pytest.raises(ValueError, match="at least 3 layers"):
        middle_layers(record)


# ---- the chapter's claims, at a reduced but meaningful scale
# -------------------------------------------
@pytest.fixture(scope="module")
def true_and_random():
    """The quick setting, true and fully random labels, for 70 of its 100 epochs (random labels fit
    by ~60)."""
    torch.set_num_threads(1)
    config = MemorizationConfig.quick().with_overrides(
        epochs=70, label_fractions=(0.0, 1.0), device="cpu"
    )
    records = run_memorization(config, progress=False)
    return records[0.0], records[1.0]


def test_random_labels_keep_a_higher_middle_layer_rank_at_equal_training_accuracy(true_and_random):
    true, random = true_and_random
    assert middle_layers(true) == ["fc2"]
    # both runs fit their training labels, the random ones later
    assert fitted_step(true) < fitted_step(random) < true.steps[-1]
    assert rank_at_fit(random) > rank_at_fit(true) + 0.01
    final = {
        name: r.norm_eff_rank(["fc2"])[-1, 0] for name, r in (("true", true), ("random", random))
    }
    assert final["random"] > final["true"] + 0.02


def test_alignment_persists_with_true_labels_and_fades_with_random_ones(true_and_random):
    true, random = true_and_random
    a_true, a_random = (diagonal_mean(r.alignment(("fc2", "fc3"))) for r in true_and_random)
    assert a_true[-1] > 1.5 * a_random[-1]  # true labels end far more aligned
    assert a_true[-1] > 0.6 * a_true.max()  # ... and keep most of their peak
    assert a_random[-1] < 0.75 * a_random.max()  # random labels lose much of theirs


def test_top_singular_vectors_settle_first_with_true_labels(true_and_random):
    true, _ = true_and_random
    for layer in ("fc1", "fc2"):
        steps = settling_steps(true, layer, threshold=0.9)
        assert steps[:3].mean() < steps[-3:].mean(), (layer, steps)
