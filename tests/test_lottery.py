"""Lottery tickets (spectral_lab.experiments.lottery): presets, rewinding, masked runs, IMP,
and the chapter's claim."""

import numpy as np
import pytest
import torch

from spectral_lab.experiments.classifier import fit
from spectral_lab.experiments.lottery import (
    LotteryConfig,
    dense_run,
    iterative_pruning,
    mask_agreement,
    masked_run,
    one_shot,
    pruned_record,
    recorded_mask_agreement,
    run_agreement,
)
from spectral_lab.pruning import layer_densities, magnitude_mask, random_mask_like
from spectral_lab.spectra import diagonal_mean

# A reduced but still meaningful scale: the chapter's MLP and data, 5 epochs instead of 40 (~1 s a
# run).
SMALL = LotteryConfig.quick().with_overrides(
    epochs=5, rewind_epoch=1, track_every=125, device="cpu"
)
# A tiny one for the mechanics: a narrow MLP, 3 epochs.
TINY = LotteryConfig.quick().with_overrides(
    epochs=3, rewind_epoch=1, hidden=(32, 32), imp_rounds=2, track_every=125, device="cpu"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small batches train fastest on one thread; the setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_dense():
    return dense_run(SMALL, SMALL.make_data())


def test_presets_and_derived_values():
    quick, full = LotteryConfig.quick(), LotteryConfig.full()
    assert set(LotteryConfig.presets()) == {"quick", "full"}
    assert (quick.epochs, quick.keep, quick.rewind_epoch) == (
        40,
        0.05,
        4,
    )  # SPEC's measured setting
    assert (full.epochs, full.rewind_epoch) == (164, 4)  # the paper: rewind to epoch 4 of 164
    assert quick.rewind_step(4000) == 500
    for config in (quick, full):
        keeps = np.array(config.imp_keeps)
        assert len(keeps) == config.imp_rounds and keeps[-1] == pytest.approx(config.keep)
        np.testing.assert_allclose(
            keeps[1:] / keeps[:-1], keeps[0]
        )  # the same fraction pruned every round
    assert 1 - full.imp_keeps[0] == pytest.approx(
        0.206, abs=1e-3
    )  # ~20 % a round, as Frankle & Carbin


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(keep=0.0), "keep"),
        (dict(keep=1.0), "keep"),
        (dict(rewind_epoch=40), "rewind_epoch"),
        (dict(imp_rounds=0), "imp_rounds"),
        (dict(mask_seed=-1), "mask_seed"),
        (dict(lr=-1.0), "lr"),
    ],
)
def test_bad_configs(override, message):
    with pytest.raises(ValueError, match=message):
        LotteryConfig.quick().with_overrides(**override)


def test_magnitude_mask_keeps_the_top_singular_vectors_random_does_not(small_dense):
    """The chapter's claim, at 5 epochs: top-10 agreement of mask * W with the dense W, first
    layer."""
    W = small_dense.final.model
    magnitude = magnitude_mask(W, keep=SMALL.keep)
    S_magnitude = float(diagonal_mean(mask_agreement(W, magnitude)["fc1"]))
    for seed in range(3):
        S_random = float(
            diagonal_mean(mask_agreement(W, random_mask_like(magnitude, seed=seed))["fc1"])
        )
        assert S_magnitude > S_random + 0.1 and S_magnitude > 3 * S_random, (
            seed,
            S_magnitude,
            S_random,
        )


def test_mask_agreement_from_records_is_the_one_from_the_model(small_dense):
    """A shipped seed has no model: its masks' agreement comes from a snapshot of the pruned
    weights and the dense run's last snapshot, the same numbers up to the stored vectors'
    precision (int16: 3e-5 of the largest entry)."""
    run = small_dense.final
    magnitude = magnitude_mask(run.model, keep=SMALL.keep)
    for mask in (magnitude, random_mask_like(magnitude, seed=0)):
        from_model = mask_agreement(run.model, mask)
        pruned = pruned_record(run, mask, top_k=SMALL.top_k)
        assert pruned.steps.tolist() == [run.step] and pruned.layers == run.record.layers
        from_records = recorded_mask_agreement(pruned, run.record)
        assert set(from_records) == set(run.record.layers) and set(from_model) <= set(from_records)
        for name, S in from_model.items():
            assert from_records[name].shape == S.shape == (10, 10)
            np.testing.assert_allclose(from_records[name], S, atol=2e-4)


def test_with_seed_draws_every_random_choice_again_and_keeps_the_preset():
    quick = LotteryConfig.quick()
    again = quick.with_seed(3)
    assert (again.seed, again.data_seed, again.mask_seed) == (3, 3, 3)
    assert again.preset == "quick" and quick.with_seed(0) == quick
    assert again.differences(quick).keys() == {"seed", "data_seed", "mask_seed"}
    with pytest.raises(ValueError, match="seed"):
        quick.with_seed(-1)


def test_magnitude_mask_keeps_fc1_directions_in_at_least_4_of_5_seeds():
    """The chapter's mask claim over its 5 seeds (``with_seed``), at 5 epochs, at the chapter's
    strength (at least 4 of 5): the magnitude mask keeps fc1's top directions and the random one
    does not. After 5 epochs fc1 is less settled than after 40, so the margins are relative (as in
    the single-seed test above) rather than the chapter's 0.3 and 0.1; the slow test below checks
    those at the chapter's scale."""
    data = SMALL.make_data()
    held = []
    for seed in range(5):
        config = SMALL.with_seed(seed)
        model = fit(config, data=data, track=False, progress=False).model  # the dense run
        magnitude = magnitude_mask(model, keep=config.keep)
        random = random_mask_like(magnitude, seed=config.mask_seed)
        S = {
            kind: float(diagonal_mean(mask_agreement(model, m)["fc1"]))
            for kind, m in (("magnitude", magnitude), ("random", random))
        }
        held.append(S["magnitude"] > S["random"] + 0.1 and S["magnitude"] > 3 * S["random"])
    assert sum(held) >= 4, held


def test_a_ticket_with_nothing_pruned_is_the_dense_run(small_dense):
    """Rewinding restores step k exactly (weights, momentum, data order): an all-ones mask
    reproduces the run."""
    ones = {
        name: torch.ones_like(p)
        for name, p in small_dense.final.model.named_parameters()
        if p.ndim == 2
    }
    run = masked_run(SMALL, small_dense, ones)
    for (name, p), q in zip(run.model.named_parameters(), small_dense.final.model.parameters()):
        assert torch.equal(p, q), name
    steps, agree = run_agreement(run.record, small_dense.final.record)
    assert steps[0] == small_dense.rewind_step == 125 and steps[-1] == 625
    for name, values in agree.items():
        np.testing.assert_allclose(values, 1.0, atol=1e-5, err_msg=name)
    S = mask_agreement(small_dense.final.model, ones)
    assert all(np.allclose(np.diag(s), 1.0, atol=1e-6) for s in S.values())


def test_one_shot_runs_keep_pruned_weights_at_zero(small_dense):
    shot = one_shot(SMALL, small_dense, track=False)
    assert set(shot.masks) == set(shot.runs) == {"magnitude", "random"}
    assert layer_densities(shot.masks["random"]) == layer_densities(shot.masks["magnitude"])
    for kind, run in shot.runs.items():
        assert (
            run.step == SMALL.total_steps(4000)
            and run.history["step"][0] == small_dense.rewind_step
        )
        params = {name: p.detach() for name, p in run.model.named_parameters()}
        for name, m in shot.masks[kind].items():
            assert float((params[name] * (1 - m)).abs().max()) == 0.0, (kind, name)
    assert set(shot.test_acc) == {"magnitude", "random"}


def test_iterative_pruning_nests_its_masks_down_to_keep():
    dense = dense_run(TINY, track=False)
    rounds = iterative_pruning(TINY, dense, random_control=False)
    assert [r.round for r in rounds] == [1, 2]
    np.testing.assert_allclose([r.density for r in rounds], TINY.imp_keeps, atol=1e-3)
    for name in rounds[0].mask:  # a weight pruned once stays pruned
        assert torch.all(rounds[1].mask[name] <= rounds[0].mask[name])
    assert all(r.random_test_acc is None and 0.0 <= r.test_acc <= 1.0 for r in rounds)


@pytest.mark.slow
def test_magnitude_ticket_beats_random_ticket_in_accuracy(small_dense):
    """At 10 epochs (a few seconds a run) the 5 % magnitude ticket trains far better than the random
    one."""
    config = SMALL.with_overrides(epochs=10)
    dense = dense_run(config, small_dense.data, track=False)
    acc = one_shot(config, dense, track=False).test_acc
    assert acc["magnitude"] > acc["random"] + 0.05, acc


@pytest.mark.slow
def test_the_chapter_tickets_over_its_5_seeds():
    """The chapter's accuracy claims at its own scale: the magnitude ticket within 3 points of the
    dense run in at least 4 of the 5 seeds, the random ticket more than 5 points behind the
    magnitude ticket in all 5, and the fc1 directions kept (as above) in at least 4."""
    base = LotteryConfig.quick().with_overrides(device="cpu")
    data = base.make_data()
    match, behind, kept = 0, 0, 0
    for seed in range(5):
        config = base.with_seed(seed)
        dense = dense_run(config, data, track=False)
        shot = one_shot(config, dense, track=False)
        acc = {"dense": float(dense.final.history["test_acc"][-1]), **shot.test_acc}
        match += abs(acc["dense"] - acc["magnitude"]) < 0.03
        behind += acc["magnitude"] - acc["random"] > 0.05
        S = {
            kind: float(diagonal_mean(mask_agreement(dense.final.model, m)["fc1"]))
            for kind, m in shot.masks.items()
        }
        kept += S["magnitude"] > 0.3 and S["random"] < 0.1
    assert match >= 4 and behind == 5 and kept >= 4, (match, behind, kept)
