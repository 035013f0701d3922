import errno
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import spectral_lab.experiments.grokking as training
from spectral_lab.curves import mean_norm_eff_rank, time_to_generalize
from spectral_lab.experiments.grokking import (
    GrokkingConfig,
    checkpoint_path,
    load_or_train,
    load_or_train_all,
    train,
)
from spectral_lab.files import atomic_write
from spectral_lab.models import ModularTransformer
from spectral_lab.record import RunRecord
from spectral_lab.runtime import seed_everything
from spectral_lab.tracker import SpectralTracker

TINY = replace(
    GrokkingConfig.quick(),
    preset="tiny",
    p=7,
    d_model=8,
    n_heads=2,
    d_mlp=16,
    steps=43,
    eval_every=5,
    track_every=10,
    checkpoint_every=10,
)


def same_records(a: RunRecord, b: RunRecord) -> None:
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)


# ---- the loop
# --------------------------------------------------------------------------------------
def test_snapshots_at_the_tracking_cadence_and_the_last_step():
    result = train(TINY, progress=False)
    record = result.record
    assert record.steps.tolist() == [0, 10, 20, 30, 40, 43]
    assert result.history["step"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 40, 43]
    assert {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_loss_svd_top",
        "val_loss_svd_bottom",
    } <= set(record.scalars)
    assert not np.isnan(record.scalars["val_acc"]).any()
    assert record.meta["config"] == asdict(TINY)
    assert (record.meta["experiment"], record.meta["preset"]) == ("grokking", "tiny")
    assert record.pairs == result.model.layer_pairs()
    assert "step 43" in repr(result) and "val acc" in repr(result)


def test_the_package_loop_is_the_loop_the_chapter_shows():
    result = train(TINY, progress=False)
    seed_everything(TINY.seed)
    model = TINY.make_model()
    data = TINY.make_data()
    optimizer = TINY.make_optimizer(model)
    for step in range(TINY.steps):
        loss = F.cross_entropy(model(data.train_x), data.train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (name, W), W_train in zip(model.state_dict().items(), result.model.state_dict().values()):
        torch.testing.assert_close(W, W_train, rtol=0, atol=0, msg=name)


def test_runs_are_deterministic():
    same_records(train(TINY, progress=False).record, train(TINY, progress=False).record)


def test_a_tracker_of_your_own_keeps_its_cadence():
    seed_everything(0)
    model = TINY.make_model()
    tracker = SpectralTracker(model, every=[0, 7], top_k=2, layers="mlp.*", pairs=None)
    record = train(TINY, model=model, tracker=tracker, progress=False).record
    assert record.steps.tolist() == [0, 7, 43] and record.layers == ["mlp.in", "mlp.out"]
    assert record.meta["config"]["preset"] == "tiny"
    assert not np.isnan(record.scalars["val_acc"]).any()


def test_progress_bar_is_quiet_under_ci(monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    train(TINY.with_overrides(steps=5), progress=None)
    assert capsys.readouterr().err == ""
    train(TINY.with_overrides(steps=5), progress=True)
    assert "5/5" in capsys.readouterr().err


# ---- checkpoints and resume
# ------------------------------------------------------------------------
class Interrupting(ModularTransformer):
    """Raises KeyboardInterrupt at the training forward pass after ``stop_after`` of them."""

    def __init__(self, *args, stop_after: int):
        super().__init__(*args)
        self.calls, self.stop_after = 0, stop_after

    def forward(self, x):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls > self.stop_after:
                raise KeyboardInterrupt
        return super().forward(x)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    whole = train(TINY, progress=False, out=tmp_path / "whole.npz").record

    out = tmp_path / "cut.npz"
    seed_everything(TINY.seed)
    model = Interrupting(TINY.p, TINY.d_model, TINY.n_heads, TINY.d_mlp, stop_after=27)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, model=model, progress=False, out=out)
    assert RunRecord.load(out).steps.tolist() == [0, 10, 20]  # saved with the checkpoint at step 20
    assert torch.load(checkpoint_path(out), weights_only=True)["step"] == 20

    resumed = train(TINY, progress=False, out=out, resume=True)
    same_records(resumed.record, whole)
    same_records(RunRecord.load(out), whole)
    assert resumed.history["step"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 40, 43]


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    out = tmp_path / "run.npz"
    first = train(TINY, progress=False, out=out)
    again = train(TINY, progress=False, out=out, resume=True)
    same_records(again.record, first.record)
    for W, W_again in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(W, W_again)


def test_resume_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume.*without resume"):
        train(TINY, progress=False, out=tmp_path / "none.npz", resume=True)
    with pytest.raises(ValueError, match="needs out="):
        train(TINY, progress=False, resume=True)
    out = tmp_path / "run.npz"
    train(TINY.with_overrides(steps=10), progress=False, out=out)
    with pytest.raises(ValueError, match=r"different config \(lr: this run 0.01, the record 0.005"):
        train(TINY.with_overrides(steps=10, lr=1e-2), progress=False, out=out, resume=True)
    checkpoint_path(out).unlink()
    with pytest.raises(FileNotFoundError, match="run.ckpt.pt"):
        train(TINY.with_overrides(steps=10), progress=False, out=out, resume=True)


def test_a_checkpoint_carries_its_config_and_refuses_another(tmp_path):
    out = tmp_path / "run.npz"
    config = TINY.with_overrides(steps=10)
    train(config, progress=False, out=out)
    state = torch.load(checkpoint_path(out), weights_only=True)
    assert state["config"] == asdict(config) and state["experiment"] == "grokking"
    # a same-shape checkpoint of another seed beside this record: resumed silently before
    other = tmp_path / "other.npz"
    train(config.with_overrides(seed=1), progress=False, out=other)
    checkpoint_path(other).replace(checkpoint_path(out))
    with pytest.raises(ValueError, match=r"run.ckpt.pt: .*different config \(seed: this run 0"):
        train(config, progress=False, out=out, resume=True)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.write_bytes(b"garbage"), "not a readable checkpoint"),
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "not a readable checkpoint"),
        (lambda path: torch.save({"step": 3}, path), "not a spectral_lab checkpoint"),
        (lambda path: _without_config(path), "stores no config"),
        (lambda path: _other_model(path), "holds another model"),
    ],
    ids=["garbage", "truncated", "foreign", "no-config", "other-model"],
)
def test_a_bad_checkpoint_is_named_with_the_fix(tmp_path, damage, message):
    out = tmp_path / "run.npz"
    config = TINY.with_overrides(steps=10)
    train(config, progress=False, out=out)
    damage(checkpoint_path(out))
    with pytest.raises(ValueError) as error:
        train(config, progress=False, out=out, resume=True)
    text = str(error.value)
    assert message in text and str(checkpoint_path(out)) in text and "\n" not in text
    assert f"delete {checkpoint_path(out)} to start over, or point --out elsewhere" in text


def _without_config(path):
    state = torch.load(path, weights_only=True)
    del state["config"]
    torch.save(state, path)


def _other_model(path):
    state = torch.load(path, weights_only=True)
    state["model"] = {"weight": torch.zeros(2, 2)}
    torch.save(state, path)


def test_a_record_of_another_experiment_is_refused(tmp_path):
    out = tmp_path / "run.npz"
    config = TINY.with_overrides(steps=10)
    train(config, progress=False, out=out)
    record = RunRecord.load(out)
    record.meta["experiment"] = "architectures"
    record.save(out)
    with pytest.raises(ValueError, match="holds a run of experiment 'architectures', not 'grok"):
        train(config, progress=False, out=out, resume=True)


def test_a_failed_write_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run.npz"
    saved = []

    def full_disk(path, write):
        if saved:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(path)
        return atomic_write(path, write)

    monkeypatch.setattr(training, "atomic_write", full_disk)
    with pytest.raises(OSError) as error:
        train(TINY, progress=False, out=out)
    assert error.value.filename == str(checkpoint_path(out))
    assert error.value.errno == errno.ENOSPC and "No space left" in str(error.value)
    assert torch.load(checkpoint_path(out), weights_only=True)["step"] == 10


def test_checkpoint_path():
    assert str(checkpoint_path("runs/grok-wd1.npz")) == "runs/grok-wd1.ckpt.pt"


# ---- load_or_train
# ---------------------------------------------------------------------------------
def test_load_or_train_trains_once_then_loads(tmp_path, monkeypatch):
    path = tmp_path / "tiny.npz"
    first = load_or_train(TINY, path, progress=False)
    assert path.exists()
    monkeypatch.setattr(
        training, "train", lambda *a, **k: pytest.fail("should have loaded the record")
    )
    same_records(load_or_train(TINY.with_overrides(device="cpu", track_every=20), path), first)


def test_a_quick_record_is_never_shown_as_full(tmp_path, capsys):
    path = tmp_path / "grok.npz"
    train(TINY, progress=False, out=path)
    saved = path.read_bytes()
    small = replace(TINY, preset="tiny_fallback", steps=10)
    record = load_or_train(GrokkingConfig.full(), path, fallback=small, progress=False)
    assert record.meta["preset"] == "tiny_fallback" and record.steps[-1] == 10
    assert path.read_bytes() == saved  # the file is left as it is
    assert "differs in" in capsys.readouterr().out


def test_load_or_train_all_loads_what_is_there_and_trains_the_rest_on_an_engine(tmp_path, capsys):
    stored = tmp_path / "stored.npz"
    kept = train(TINY, progress=False, out=stored).record
    other = replace(TINY, preset="tiny_other", seed=1)
    small = replace(TINY, preset="tiny_fallback", steps=10)
    records = load_or_train_all(
        {
            "stored": (TINY, stored, None),  # there: loaded
            "new": (other, tmp_path / "new.npz", None),  # missing: trained and saved
            "fallback": (GrokkingConfig.full(), stored, small),  # differs: the fallback, unsaved
        },
        engine="processes",
        workers=2,
        progress=False,
    )
    assert list(records) == ["stored", "new", "fallback"]
    same_records(records["stored"], kept)
    same_records(records["new"], train(other, progress=False).record)  # the worker's = here
    same_records(RunRecord.load(tmp_path / "new.npz"), records["new"])
    assert records["fallback"].meta["preset"] == "tiny_fallback"
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["new.npz", "stored.npz"]
    assert "differs in" in capsys.readouterr().out


# ---- the claims at quick scale (SPEC section 2, "Grokking")
# ----------------------------------------
@pytest.fixture(scope="module")
def quick_runs():
    return {
        "wd1": train(GrokkingConfig.quick(), progress=False).record,
        "wd0": train(GrokkingConfig.quick_no_wd(), progress=False).record,
    }


def test_with_weight_decay_the_run_groks(quick_runs):
    record = quick_runs["wd1"]
    assert record.scalars["val_acc"][-1] >= 0.95
    # grokking: the training set is fitted long before the validation set
    assert time_to_generalize(record, 0.99, metric="train_acc") <= time_to_generalize(record) / 3


def test_with_weight_decay_the_rank_falls_through_the_validation_jump(quick_runs):
    record = quick_runs["wd1"]
    rank = mean_norm_eff_rank(record)  # (T,)
    assert rank[-1] <= 0.6 * rank[0], "the mean NormEffRank should fall substantially"
    steps, val_acc = record.steps, record.scalars["val_acc"]
    end = np.flatnonzero(val_acc >= 0.95)[0]  # the jump ends
    start = np.flatnonzero(val_acc[:end] < 0.5)[-1]  # the last snapshot before it was half done
    assert rank[end] < rank[start] - 0.02, (
        "the rank should be falling while validation accuracy jumps"
    )
    fallen = (rank[0] - rank[end]) / (rank[0] - rank.min())
    assert 0.25 < fallen < 0.9, (
        f"at the jump the rank fall should be under way, not over (got {fallen:.2f})"
    )
    assert steps[end] < steps[-1]


def test_without_weight_decay_no_grokking_and_higher_rank(quick_runs):
    grok, control = quick_runs["wd1"], quick_runs["wd0"]
    assert control.scalars["train_acc"][-1] == 1.0  # it fits the training set...
    assert control.scalars["val_acc"][-1] < 0.6  # ...but does not generalize in the same budget
    assert np.isnan(time_to_generalize(control))
    assert mean_norm_eff_rank(control)[-1] > mean_norm_eff_rank(grok)[-1] + 0.2
    # every matrix ends with a higher rank without weight decay
    assert (control.norm_eff_rank()[-1] > grok.norm_eff_rank()[-1]).all()


def test_top_half_svd_pruning_keeps_the_grokked_solution(quick_runs):
    scalars = quick_runs["wd1"].scalars
    assert scalars["val_acc_svd_top"][-1] >= 0.95
    assert scalars["val_loss_svd_bottom"][-1] > 10 * scalars["val_loss_svd_top"][-1]


def test_pruned_losses_can_be_skipped_at_snapshots():
    record = train(TINY.with_overrides(track_pruning=False), progress=False).record
    assert not [name for name in record.scalars if "svd" in name]
    full = train(TINY, progress=False).record
    assert {"val_loss_svd_top", "val_acc_svd_bottom"} <= set(full.scalars)
    for name in ("train_loss", "val_acc"):  # the training itself is the same run
        np.testing.assert_array_equal(record.scalars[name], full.scalars[name])


def test_a_record_written_before_the_layout_move_still_loads_and_matches_its_config():
    """tests/data/grokking-before-layout.npz was written by the package at 5b333e2 (flat layout)."""
    path = Path(__file__).parent / "data" / "grokking-before-layout.npz"
    record = RunRecord.load(path)
    assert record.meta["experiment"] == "grokking" and record.steps.tolist() == [0, 10, 20]
    config = GrokkingConfig.from_dict(record.config)  # no track_pruning in it: the default
    assert config.track_pruning and config.p == 7
    assert not config.differences(record.config)
    again = train(replace(config, device="cpu"), progress=False).record
    for name in record.layers:  # the same run, on this machine
        np.testing.assert_allclose(
            again.singular_values(name), record.singular_values(name), rtol=1e-4, atol=1e-6
        )
