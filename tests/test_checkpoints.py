"""spectral_lab.checkpoints: records from checkpoints equal the records online tracking makes.

Every test writes its own checkpoints (state dicts, safetensors, a Hugging Face save_pretrained
folder from a random config, a Lightning checkpoint); nothing is downloaded. The frameworks are
skipped with the install hint when missing.
"""

import numpy as np
import pytest
import torch
from models import SmallCNN, SmallTransformer, batch_for, mlp
from torch import nn

from spectral_lab import RunRecord, SpectralTracker
from spectral_lab.checkpoints import (
    CheckpointError,
    analyze,
    find_checkpoints,
    module_from_state_dict,
    step_from_name,
)
from spectral_lab.cli import main
from spectral_lab.record import LAYER_FIELDS

NEEDS = {
    "safetensors": 'needs safetensors: pip install "spectral-lab[checkpoints]"',
    "hf": 'needs the [hf] extra: pip install "spectral-lab[hf]"',
    "lightning": 'needs the [lightning] extra: pip install "spectral-lab[lightning]"',
}
STEPS = (0, 5, 10, 15, 20)
LIGHTNING_WARNINGS = (
    "ignore::DeprecationWarning",
    "ignore::UserWarning",
    "ignore::FutureWarning",
)


def _train_and_save(model: nn.Module, folder, save, steps=21, top_k=10) -> RunRecord:
    """Train ``model`` with a tracker at STEPS and ``save(state_dict, path_stem)`` at the same
    steps; returns the online record."""
    tracker = SpectralTracker(model, every=list(STEPS), top_k=top_k)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    folder.mkdir(exist_ok=True)
    for step in range(steps):
        if step in STEPS:
            save(model.state_dict(), folder / f"step_{step:04d}")
        torch.manual_seed(step)
        x, y = batch_for(model)
        tracker.step(step, model)  # the weights the checkpoint holds: before this step's update
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tracker.record


def _torch_save(state, stem):
    torch.save(state, stem.with_suffix(".pt"))


def assert_same_record(a: RunRecord, b: RunRecord, exact: bool = True) -> None:
    assert list(a.steps) == list(b.steps)
    assert a.layers == b.layers and a.pairs == b.pairs
    for layer in a.layers:
        for field in LAYER_FIELDS:
            x, y = a.series(layer, field), b.series(layer, field)
            if exact:
                np.testing.assert_array_equal(x, y, err_msg=f"{layer} {field}")
            else:
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{layer} {field}")
    for pair in a.pairs:
        np.testing.assert_array_equal(a.alignment(pair), b.alignment(pair))


# ---- the record equals online tracking
# ----------------------------------------------------------------


@pytest.mark.parametrize("make", [mlp, SmallCNN, SmallTransformer], ids=["mlp", "cnn", "attn"])
def test_record_from_state_dicts_equals_the_online_record(tmp_path, make):
    torch.manual_seed(0)
    online = _train_and_save(make(), tmp_path / "ckpts", _torch_save)
    # without the model: the matrices come from the tensors (conv kernels flattened, norms out)
    assert_same_record(analyze(tmp_path / "ckpts"), online)
    # with the model: the state dicts are loaded into it
    torch.manual_seed(1)
    assert_same_record(analyze(tmp_path / "ckpts", model=make), online)


def test_safetensors_and_a_glob(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason=NEEDS["safetensors"])
    torch.manual_seed(0)

    def save(state, stem):
        safetensors.save_file(dict(state), stem.with_suffix(".safetensors"))

    online = _train_and_save(mlp(), tmp_path / "st", save)
    assert_same_record(analyze(tmp_path / "st"), online)
    part = analyze(str(tmp_path / "st" / "step_000[05].safetensors"))
    assert list(part.steps) == [0, 5]


def test_a_live_module_is_one_snapshot_and_out_grows_by_step(tmp_path):
    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=3)
    tracker.step(7, model)
    record = analyze(model, step=7, top_k=3, out=tmp_path / "r.npz")
    assert_same_record(record, tracker.record)
    with torch.no_grad():
        model[0].weight.mul_(2)
    again = analyze(model, step=9, top_k=3, out=tmp_path / "r.npz")
    assert list(again.steps) == [7, 9]
    assert list(RunRecord.load(tmp_path / "r.npz").steps) == [7, 9]


def test_tied_weights_are_one_matrix_as_in_the_tracker():
    model = nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 10, bias=False))
    model[1].weight = model[0].weight  # tied: (10, 6) both
    tree = module_from_state_dict(model.state_dict())
    assert [name for name, _ in tree.named_parameters()] == ["0.weight"]
    assert analyze(model).layers == SpectralTracker(model).record.layers == ["0"]


# ---- order, resume, failures
# ---------------------------------------------------------------------------


def test_steps_come_from_names_then_metadata(tmp_path):
    assert step_from_name("epoch=2-step=300.ckpt") == 300
    assert step_from_name("checkpoint-500") == 500
    assert step_from_name("model_0100.pt") == 100
    assert step_from_name("run3_step40.safetensors") == 40
    assert step_from_name("last.ckpt") is None
    model = mlp()
    for name, step in (("last.pt", 30), ("first.pt", 10)):
        torch.save({"model": model.state_dict(), "step": step}, tmp_path / name)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "step_20.pt")
    assert list(analyze(tmp_path).steps) == [10, 20, 30]
    torch.save(model.state_dict(), tmp_path / "final.pt")  # no step anywhere
    with pytest.raises(CheckpointError, match="cannot order final.pt"):
        analyze(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoints in"):
        find_checkpoints(tmp_path / "*.nothing")


def test_resume_skips_steps_already_in_the_record_without_reading_them(tmp_path):
    torch.manual_seed(0)
    online = _train_and_save(mlp(), tmp_path / "ckpts", _torch_save)
    first = analyze(str(tmp_path / "ckpts" / "step_000*.pt"), out=tmp_path / "r.npz")
    assert list(first.steps) == [0, 5]
    for step in (0, 5):  # a rerun must not open these again
        (tmp_path / "ckpts" / f"step_{step:04d}.pt").write_bytes(b"garbage")
    assert_same_record(analyze(tmp_path / "ckpts", out=tmp_path / "r.npz"), online)
    assert_same_record(RunRecord.load(tmp_path / "r.npz"), online)


def test_a_bad_checkpoint_stops_with_the_record_saved_or_is_skipped(tmp_path, capsys):
    torch.manual_seed(0)
    _train_and_save(mlp(), tmp_path / "ckpts", _torch_save)
    (tmp_path / "ckpts" / "step_0010.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "r.npz"
    with pytest.raises(CheckpointError, match="step_0010.pt.*saved in.*skip-bad"):
        analyze(tmp_path / "ckpts", out=out)
    assert list(RunRecord.load(out).steps) == [0, 5]
    record = analyze(tmp_path / "ckpts", out=out, skip_bad=True)
    assert list(record.steps) == [0, 5, 15, 20]
    assert "skipped step_0010.pt" in capsys.readouterr().err
    assert record.meta["analyze"]["skipped"] == ["step_0010.pt"]


def test_a_pickled_model_loads_only_with_the_opt_in(tmp_path):
    model = mlp()
    torch.save(model, tmp_path / "step_3.pt")
    with pytest.raises(CheckpointError, match="runs code from the file"):
        analyze(tmp_path)
    record = analyze(tmp_path, unsafe_allow_pickle=True)
    assert record.layers == ["0", "2", "4"] and list(record.steps) == [3]


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    torch.save(mlp(widths=(12, 16, 5)).state_dict(), tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match="step_1.pt does not fit the model"):
        analyze(tmp_path, model=mlp())


# ---- frameworks
# ----------------------------------------------------------------------------------------


def _gpt2(transformers):
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2, n_inner=64
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_a_hugging_face_save_pretrained_folder(tmp_path, safe):
    transformers = pytest.importorskip("transformers", reason=NEEDS["hf"])
    model = _gpt2(transformers)
    online = SpectralTracker(model, every=1, top_k=3, pairs=None)
    online.step(0, model)
    for step in (100, 200):
        model.save_pretrained(tmp_path / f"checkpoint-{step}", safe_serialization=safe)
    # with the model class: the same layers in the same order
    record = analyze(tmp_path, model=lambda: _gpt2(transformers), top_k=3, pairs=None)
    assert list(record.steps) == [100, 200]
    for layer in online.record.layers:
        np.testing.assert_array_equal(
            record.series(layer, "singular_values")[0],
            online.record.series(layer, "singular_values")[0],
        )
    assert record.layers == online.record.layers
    # without it: the same matrices (safetensors stores names sorted, so compare as sets)
    alone = analyze(tmp_path / "checkpoint-100", top_k=3, pairs=None)
    assert sorted(alone.layers) == sorted(online.record.layers)
    for layer in alone.layers:
        np.testing.assert_array_equal(
            alone.series(layer, "singular_values"), online.record.series(layer, "singular_values")
        )


@pytest.mark.filterwarnings(*LIGHTNING_WARNINGS)
def test_a_lightning_checkpoint(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason=NEEDS["lightning"])

    class LitMLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(32, 12, generator=g), torch.randint(0, 5, (32,), generator=g)
    )
    every = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1
    )
    trainer = pl.Trainer(
        max_steps=6,
        callbacks=[every],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    lit = LitMLP()
    trainer.fit(lit, torch.utils.data.DataLoader(data, batch_size=8))
    record = analyze(tmp_path / "ckpt", model=mlp, top_k=3)
    assert list(record.steps) == [2, 4, 6]
    final = SpectralTracker(lit.net, every=1, top_k=3)
    final.step(6, lit.net)
    for layer in record.layers:
        np.testing.assert_array_equal(
            record.series(layer, "singular_values")[-1],
            final.record.series(layer, "singular_values")[0],
        )
    assert analyze(tmp_path / "ckpt", top_k=3).layers == ["net.0", "net.2", "net.4"]


# ---- the command line
# ----------------------------------------------------------------------------------


def test_the_analyze_command(tmp_path, capsys):
    torch.manual_seed(0)
    online = _train_and_save(mlp(), tmp_path / "ckpts", _torch_save)
    out = tmp_path / "r.npz"
    assert main(["analyze", str(tmp_path / "ckpts"), "--out", str(out)]) == 0
    assert_same_record(RunRecord.load(out), online)
    (tmp_path / "ckpts" / "step_0025.pt").write_bytes(b"broken")
    assert main(["analyze", str(tmp_path / "ckpts"), "--out", str(out)]) == 1
    assert "step_0025.pt" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nothing"), "--out", str(out)]) == 2
