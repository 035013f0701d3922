"""spectral_lab.integrations: Lightning and HF callbacks, sharded weights, and the TensorBoard / W&B
/ MLflow sinks.

Each framework test is skipped when its extra is missing (``pip install -e ".[test]"`` installs them
all).
"""

import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from models import mlp, train
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from spectral_lab import RunRecord, SpectralTracker
from spectral_lab.integrations import callbacks, hf_callback, lightning_callback, sinks

N, BATCH = 64, 8  # 8 micro-batches an epoch
NEEDS = {
    extra: f'needs the [{extra}] extra: pip install -e ".[{extra}]"'
    for extra in ("lightning", "hf", "tensorboard", "wandb", "mlflow")
}


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 12, generator=g), torch.randint(0, 5, (N,), generator=g)


def _tracked_run(every=1, steps=6, **kwargs) -> SpectralTracker:
    model = mlp()
    tracker = SpectralTracker(model, every=every, top_k=3, **kwargs)
    train(model, tracker, steps=steps)
    return tracker


# ---- PyTorch Lightning
# ------------------------------------------------------------------------------


def _lightning_module(pl):
    class LitMLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return LitMLP()


def _fit_lightning(pl, module, callback, max_epochs=2, accumulate=2):
    trainer = pl.Trainer(
        callbacks=[callback],
        max_epochs=max_epochs,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(*_data()), batch_size=BATCH)
    trainer.fit(module, loader)
    return trainer


LIGHTNING_WARNINGS = [
    "ignore:.*does not have many workers:UserWarning",  # num_workers=0 is right for a tiny CPU test
    "ignore:.*GPU available but not used:UserWarning",
    # lightning 2.6 with torch 2.13: Lightning's own use of a deprecated torch pytree class
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning",
]


@pytest.mark.filterwarnings(*LIGHTNING_WARNINGS)
def test_lightning_one_snapshot_per_optimizer_step_with_accumulation(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason=NEEDS["lightning"])
    module = _lightning_module(pl)
    tracker = SpectralTracker(
        module, every=1, top_k=3, keep_weights=True, path=tmp_path / "run.npz"
    )
    trainer = _fit_lightning(pl, module, lightning_callback(tracker))
    # 2 epochs x 8 micro-batches / 2 accumulated = 8 optimizer steps; step 0 is the initial weights
    assert trainer.global_step == 8
    np.testing.assert_array_equal(tracker.record.steps, np.arange(9))
    final = tracker.record.series("net.0", "weights")[-1]
    np.testing.assert_array_equal(final, module.net[0].weight.detach().numpy())
    loss = tracker.record.scalars["loss"]
    assert np.isnan(loss[0]) and np.all(np.isfinite(loss[1:]))  # no loss before the first step
    assert "train_loss" in tracker.record.scalars
    saved = RunRecord.load(tmp_path / "run.npz")  # tracker.close() at the end of training
    np.testing.assert_array_equal(saved.steps, tracker.record.steps)


@pytest.mark.filterwarnings(*LIGHTNING_WARNINGS)
def test_lightning_cadence_counts_optimizer_steps():
    pl = pytest.importorskip("lightning.pytorch", reason=NEEDS["lightning"])
    module = _lightning_module(pl)
    tracker = SpectralTracker(module, every=3, top_k=2)
    _fit_lightning(pl, module, lightning_callback(tracker), max_epochs=2, accumulate=2)
    np.testing.assert_array_equal(tracker.record.steps, [0, 3, 6])


def test_lightning_callback_records_on_rank_zero_only(tmp_path):
    pytest.importorskip("lightning.pytorch", reason=NEEDS["lightning"])
    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=2, path=tmp_path / "run.npz")
    for rank_zero, steps in [(False, []), (True, [0, 1])]:
        trainer = SimpleNamespace(
            global_step=0, is_global_zero=rank_zero, callback_metrics={}, accumulate_grad_batches=1
        )
        callback = lightning_callback(tracker)
        callback.on_train_start(trainer, model)
        trainer.global_step = 1
        callback.on_train_batch_end(trainer, model, {"loss": torch.tensor(0.5)}, None, 0)
        callback.on_train_batch_end(
            trainer, model, {"loss": torch.tensor(0.5)}, None, 1
        )  # same step: once
        callback.on_train_end(trainer, model)
        assert list(tracker.record.steps) == steps
        assert (tmp_path / "run.npz").exists() == rank_zero


# ---- Hugging Face Trainer
# ---------------------------------------------------------------------------


class _Pairs(Dataset):
    def __init__(self):
        self.x, self.y = _data()

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class _HFMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_hf_trainer_snapshots_at_global_steps_with_accumulation(tmp_path):
    transformers = pytest.importorskip("transformers", reason=NEEDS["hf"])
    pytest.importorskip("accelerate", reason=NEEDS["hf"])
    model = _HFMLP()
    tracker = SpectralTracker(model, every=1, top_k=3, keep_weights=True)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        learning_rate=0.1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=100,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_Pairs(), callbacks=[hf_callback(tracker)]
    )
    trainer.train()
    assert trainer.state.global_step == 4  # 8 micro-batches / 2
    np.testing.assert_array_equal(tracker.record.steps, np.arange(5))
    np.testing.assert_array_equal(
        tracker.record.series("net.0", "weights")[-1], model.net[0].weight.detach().numpy()
    )
    loss = tracker.record.scalars["loss"]  # the Trainer logged at every snapshot step
    assert np.isnan(loss[0]) and np.all(np.isfinite(loss[1:]))


def test_hf_callback_records_on_the_main_process_only():
    pytest.importorskip("transformers", reason=NEEDS["hf"])
    model = mlp()
    tracker = SpectralTracker(model, every=2, top_k=2)
    for main, steps in [(False, []), (True, [0, 2])]:
        callback = hf_callback(tracker)
        state = SimpleNamespace(global_step=0, is_world_process_zero=main)
        control = SimpleNamespace(should_log=False)
        callback.on_train_begin(None, state, control, model=model)
        for step in (1, 2):
            state.global_step = step
            control = callback.on_step_end(None, state, control, model=model)
            assert control.should_log == (step == 2)  # asks the Trainer to log at snapshot steps
            callback.on_log(
                None, state, control, logs={"loss": 0.25, "epoch": 0.5, "step": step}, model=model
            )
        assert list(tracker.record.steps) == steps
    assert tracker.record.scalars["loss"][-1] == 0.25


# ---- sharded weights
# --------------------------------------------------------------------------------


def _shard(model, layer: int, ds: bool):
    """Replace a weight by an empty local shard, as ZeRO-3 leaves it between forward passes."""
    param = nn.Parameter(torch.empty(0))
    if ds:
        param.ds_numel = model[layer].weight.numel()
    model[layer].weight = param


@pytest.mark.parametrize(
    "ds, kind, advice",
    [
        (True, "deepspeed", "ZeRO stage 1 or 2"),
        (False, "local", "Build the tracker on the unsharded model"),
    ],
)
def test_sharded_weights_stop_tracking_with_a_message(monkeypatch, ds, kind, advice):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as on a machine without deepspeed
    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=2)
    _shard(model, 2, ds)
    found, names = callbacks.find_sharding(model, tracker.refs)
    assert found == kind and list(names) == ["2"]
    snapshots = callbacks._Snapshots(tracker)
    with pytest.warns(RuntimeWarning, match=f"stops tracking at step 0.*'2'.*{advice}"):
        assert not snapshots.take(0, model, is_zero=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per step
        assert not snapshots.take(1, model, is_zero=True)
    assert len(tracker.record) == 0


@pytest.fixture
def world_of_one(tmp_path):
    """A real process group of one CPU process (gloo), so FSDP and DTensor run in the test
    process."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch built without torch.distributed")
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_dtensor_weights_are_refused_with_a_message_on_rank_zero_only(world_of_one):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=2)
    mesh = init_device_mesh("cpu", (1,))
    model[0].weight = nn.Parameter(distribute_tensor(model[0].weight.detach(), mesh, [Shard(0)]))
    assert callbacks.find_sharding(model, tracker.refs)[0] == "dtensor"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another rank: stops as well, says nothing
        assert not callbacks._Snapshots(tracker).take(0, model, is_zero=False)
    with pytest.warns(
        RuntimeWarning, match="DTensors sharded across ranks.*FSDP2's fully_shard.*full_state_dict"
    ):
        assert not callbacks._Snapshots(tracker).take(0, model, is_zero=True)


@pytest.mark.filterwarnings(
    "ignore:FSDP is switching to use `NO_SHARD`:UserWarning"
)  # a world of one
def test_fsdp_weights_are_gathered_with_summon_full_params(world_of_one):
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=2, keep_weights=True)
    wrapped = FullyShardedDataParallel(model, device_id=torch.device("cpu"))
    wrapped(torch.randn(4, 12)).sum().backward()
    assert callbacks.find_sharding(wrapped, tracker.refs)[0] == "fsdp"
    assert callbacks._Snapshots(tracker).take(0, wrapped, is_zero=True)
    with FullyShardedDataParallel.summon_full_params(wrapped):
        W = model[2].weight.detach().numpy().copy()
    np.testing.assert_array_equal(tracker.record.series("2", "weights")[0], W)


def test_whole_weights_need_no_gathering():
    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=2)
    assert callbacks.find_sharding(model, tracker.refs) == (None, {})
    assert callbacks._Snapshots(tracker).take(0, model, is_zero=True)
    assert list(tracker.record.steps) == [0]


# ---- sinks
# ------------------------------------------------------------------------------------------


def test_snapshot_scalars_are_the_records_numbers():
    record = _tracked_run(every=2).record
    values = sinks.snapshot_scalars(record, index=1, top=2)
    assert values["norm_eff_rank/2"] == pytest.approx(record.series("2", "norm_eff_rank")[1])
    assert values["singular_value_2/4"] == pytest.approx(record.singular_values("4")[1, 1])
    assert values["agreement_first/0"] == pytest.approx(
        np.diagonal(record.series("0", "agreement_first")[1]).mean()
    )
    assert values["alignment/0-2"] == pytest.approx(
        np.diagonal(record.alignment(("0", "2"))[1]).mean()
    )
    assert values["loss"] == pytest.approx(record.scalars["loss"][1])
    assert "singular_value_3/0" not in values


class _ListSink(sinks.Sink):
    def __init__(self):
        super().__init__(prefix="s/", top=1)
        self.logged, self.figures_logged, self.closes = [], [], 0

    def log_scalars(self, values, step):
        self.logged.append((step, values))

    def log_figures(self, figures, step):
        self.figures_logged.append((step, sorted(figures)))

    def close(self):
        self.closes += 1


def test_every_snapshot_reaches_the_sinks_and_close_sends_figures(tmp_path):
    sink = _ListSink()
    tracker = _tracked_run(every=2, sinks=[sink], path=tmp_path / "run.npz")
    assert [step for step, _ in sink.logged] == [0, 2, 4]
    assert sink.logged[-1][1]["s/loss"] == pytest.approx(tracker.record.scalars["loss"][-1])
    tracker.close()
    tracker.close()  # idempotent for the sinks
    assert (
        sink.figures_logged == [(4, ["s/norm_eff_rank_heatmap", "s/singular_values"])]
        and sink.closes == 1
    )
    assert RunRecord.load(tmp_path / "run.npz").steps.tolist() == [0, 2, 4]
    with pytest.raises(TypeError, match="push"):
        tracker.add_sink(object())


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason=NEEDS["tensorboard"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = _tracked_run(every=2, sinks=[sinks.TensorBoardSink(tmp_path / "live")])
    tracker.close()
    sinks.export_to_tensorboard(tracker.record, tmp_path / "export", figures=False)
    for folder, images in [("live", True), ("export", False)]:
        events = EventAccumulator(str(tmp_path / folder))
        events.Reload()
        ranks = events.Scalars("spectral/norm_eff_rank/2")
        assert [e.step for e in ranks] == [0, 2, 4]
        np.testing.assert_allclose(
            [e.value for e in ranks], tracker.record.series("2", "norm_eff_rank"), rtol=1e-6
        )
        assert "spectral/loss" in events.Tags()["scalars"]
        assert ("spectral/norm_eff_rank_heatmap" in events.Tags()["images"]) == images


def test_a_sink_opens_nothing_until_a_snapshot_arrives(tmp_path):
    pytest.importorskip("tensorboard", reason=NEEDS["tensorboard"])
    idle = sinks.TensorBoardSink(tmp_path / "idle")  # as built on a rank that never records
    SpectralTracker(mlp(), every=1, sinks=[idle]).close()
    assert not (tmp_path / "idle").exists()


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason=NEEDS["wandb"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    sink = sinks.WandbSink(project="spectral-lab-test", dir=str(tmp_path))
    tracker = _tracked_run(every=2, sinks=[sink])
    summary = dict(sink.run.summary)  # the last values logged
    assert summary["spectral/step"] == 4
    assert summary["spectral/norm_eff_rank/2"] == pytest.approx(
        tracker.record.series("2", "norm_eff_rank")[-1]
    )
    tracker.close()  # figures, then wandb.finish(): the sink started the run
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert list((runs[0] / "files" / "media").rglob("*.png"))  # the two figures


def test_mlflow_metrics_read_back_from_the_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason=NEEDS["mlflow"])
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv(
        "MLFLOW_ALLOW_FILE_STORE", "true"
    )  # MLflow 3 keeps the file store behind a flag
    uri = (tmp_path / "mlruns").as_uri()
    record = _tracked_run(every=2).record
    sink = sinks.export_to_mlflow(record, tracking_uri=uri, experiment="spectral")
    client = MlflowClient(uri)
    history = client.get_metric_history(sink.run_id, "spectral/norm_eff_rank/2")
    assert [m.step for m in history] == [0, 2, 4]
    np.testing.assert_allclose(
        [m.value for m in history], record.series("2", "norm_eff_rank"), rtol=1e-6
    )
    assert client.get_metric_history(sink.run_id, "spectral/alignment/0-2")
    artifacts = [a.path for a in client.list_artifacts(sink.run_id, "spectral")]
    assert "spectral/norm_eff_rank_heatmap.png" in artifacts
    assert client.get_run(sink.run_id).info.status == "FINISHED"


# ---- a missing extra says which one to install
# --------------------------------------------------------


@pytest.mark.parametrize(
    "build, modules, extra",
    [
        (
            lambda t, d: lightning_callback(t),
            ["lightning", "lightning.pytorch", "pytorch_lightning"],
            "lightning",
        ),
        (lambda t, d: hf_callback(t), ["transformers"], "hf"),
        (lambda t, d: sinks.TensorBoardSink(d), ["tensorboard"], "tensorboard"),
        (lambda t, d: sinks.WandbSink(mode="offline", dir=str(d)), ["wandb"], "wandb"),
        (lambda t, d: sinks.MLflowSink(d.as_uri()), ["mlflow"], "mlflow"),
    ],
)
def test_a_missing_extra_names_the_pip_extra(monkeypatch, tmp_path, build, modules, extra):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    callbacks._lightning_class.cache_clear()
    callbacks._hf_class.cache_clear()
    tracker = SpectralTracker(mlp(), every=1)
    with pytest.raises(ImportError, match=rf'pip install -e "\.\[{extra}\]"'):
        build(tracker, tmp_path)
    callbacks._lightning_class.cache_clear()
    callbacks._hf_class.cache_clear()


def test_importing_the_integrations_imports_no_framework():
    import subprocess

    code = (
        "import sys, spectral_lab, spectral_lab.integrations.callbacks, "
        "spectral_lab.integrations.sinks\n"
        "loaded = [m for m in ('lightning', 'pytorch_lightning', 'transformers', 'tensorboard', "
        "'wandb', 'mlflow')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
