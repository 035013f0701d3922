import json
from dataclasses import FrozenInstanceError, asdict, replace

import numpy as np
import pytest
import torch

from spectral_lab.config import OBSERVATION_FIELDS, coerce_value
from spectral_lab.experiments import EXPERIMENTS
from spectral_lab.experiments.grokking import GrokkingConfig
from spectral_lab.experiments.weight_decay import WeightDecaySweep
from spectral_lab.models import ModularMLP, ModularTransformer


def test_full_is_the_paper():
    config = GrokkingConfig.full()
    assert (config.p, config.train_fraction, config.d_model, config.n_heads, config.d_mlp) == (
        113,
        0.3,
        128,
        4,
        512,
    )
    assert (config.lr, config.beta1, config.beta2, config.weight_decay, config.steps) == (
        1e-3,
        0.9,
        0.98,
        1.0,
        40_000,
    )
    assert config.model == "transformer" and config.scale == "full"
    assert GrokkingConfig() == replace(GrokkingConfig.full(), preset="custom")


def test_the_papers_other_rows():
    assert GrokkingConfig.full_no_wd().weight_decay == 0.0
    more = GrokkingConfig.full_more_data()
    assert (more.train_fraction, more.weight_decay) == (0.9, 0.0)
    assert set(GrokkingConfig.presets()) == {
        "quick",
        "quick_no_wd",
        "quick_more_data",
        "full",
        "full_no_wd",
        "full_more_data",
    }
    for name, make in GrokkingConfig.presets().items():
        assert make().preset == name


def test_quick_presets_differ_only_in_weight_decay():
    quick, control = GrokkingConfig.quick(), GrokkingConfig.quick_no_wd()
    assert quick.scale == control.scale == "quick"
    assert quick.differences(control, ignore=("preset",)) == {"weight_decay": (1.0, 0.0)}


def test_optimizer_is_adamw_with_the_configured_hyperparameters():
    config = GrokkingConfig.quick()
    model = config.make_model()
    optimizer = config.make_optimizer(model)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["weight_decay"]) == (config.lr, (0.9, 0.98), 1.0)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_make_model_and_data():
    config = GrokkingConfig.quick()
    assert isinstance(config.make_model(), ModularTransformer)
    assert isinstance(config.with_overrides(model="mlp").make_model(), ModularMLP)
    data = config.make_data()
    assert data.p == config.p and len(data.train_y) == int(config.train_fraction * config.p**2)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(
        ValueError, match="unknown preset 'fast'.*quick, quick_no_wd, quick_more_data, full"
    ):
        GrokkingConfig.from_preset("fast")


def test_overrides_are_parsed_and_checked():
    config = GrokkingConfig.quick().with_overrides(lr="3e-3", steps="2_000", weight_decay=2)
    assert config.lr == 3e-3 and config.steps == 2000 and config.weight_decay == 2.0
    assert isinstance(config.weight_decay, float)
    with pytest.raises(ValueError, match="no field 'learning_rate'.*fields: preset, model"):
        config.with_overrides(learning_rate=1.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"steps": 1.5}, "steps must be an integer"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"model": "cnn"}, "model must be one of transformer, mlp"),
        ({"train_fraction": 1.0}, "strictly between 0 and 1"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"n_heads": 3}, "must divide d_model"),
        ({"beta2": 1.0}, r"beta2 must lie in \[0, 1\)"),
        ({"eval_every": 10, "track_every": 25}, "multiple of eval_every"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"device": ""}, "device must be a non-empty string"),
    ],
)
def test_bad_values_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        GrokkingConfig.quick().with_overrides(**overrides)


def test_configs_are_frozen_and_round_trip_through_json():
    config = GrokkingConfig.quick()
    with pytest.raises(FrozenInstanceError):
        config.lr = 1.0
    stored = json.loads(json.dumps(asdict(config)))
    assert GrokkingConfig.from_dict(stored) == config
    sweep = WeightDecaySweep.quick()
    assert WeightDecaySweep.from_dict(json.loads(json.dumps(asdict(sweep)))) == sweep


def test_differences_ignore_how_a_run_was_observed():
    config = GrokkingConfig.full()
    observed = config.with_overrides(device="cuda", track_every=200, eval_every=100, top_k=5)
    assert config.differences(observed) == {}
    assert config.differences(asdict(GrokkingConfig.quick()))  # a quick run is not a full one
    assert "preset" in config.differences(replace(config, preset="quick"))


def test_coerce_value():
    assert coerce_value("x", bool, "true") is True and coerce_value("x", bool, "0") is False
    assert coerce_value("x", tuple[float, ...], "0, 1e-3,1") == (0.0, 1e-3, 1.0)
    assert coerce_value("x", tuple[float, ...], [0, 1]) == (0.0, 1.0)
    for kind, bad in ((int, True), (float, float("nan")), (tuple[float, ...], ""), (bool, "maybe")):
        with pytest.raises(ValueError, match="x must be"):
            coerce_value("x", kind, bad)


def test_weight_decay_sweep_gives_one_grokking_config_per_weight_decay():
    sweep = WeightDecaySweep.quick()
    assert sweep.weight_decays == (0.0, 1e-3, 1e-2, 0.1, 1.0, 3.0)
    configs = sweep.configs()
    assert [c.weight_decay for c in configs] == list(sweep.weight_decays)
    assert [c.preset for c in configs][-2:] == ["quick/wd=1", "quick/wd=3"]
    assert {c.scale for c in configs} == {"quick"} and GrokkingConfig(
        preset="mine"
    ).scale == "custom"
    # the wd 1 and wd 0 runs of the quick sweep are the quick grokking runs, shorter and observed
    # less often
    ignore = OBSERVATION_FIELDS + ("preset",)
    assert configs[4].differences(GrokkingConfig.quick(), ignore=ignore) == {"steps": (1200, 1500)}
    assert configs[0].differences(GrokkingConfig.quick_no_wd(), ignore=ignore) == {
        "steps": (1200, 1500)
    }
    assert WeightDecaySweep.full().weight_decays == (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
    assert (
        WeightDecaySweep.full().configs()[5].differences(GrokkingConfig.full(), ignore=("preset",))
        == {}
    )
    with pytest.raises(ValueError, match="distinct"):
        sweep.with_overrides(weight_decays="1,1")


def test_registry():
    assert EXPERIMENTS["grokking"].config_class is GrokkingConfig
    assert EXPERIMENTS["weight_decay"].config_class is WeightDecaySweep
    for experiment in EXPERIMENTS.values():
        assert callable(experiment.run) and "quick" in experiment.config_class.presets()


def test_numpy_scalars_are_accepted_where_python_numbers_are():
    config = GrokkingConfig.quick().with_overrides(seed=np.int64(1), lr=np.float32(0.5))
    assert config.seed == 1 and type(config.seed) is int
    assert config.lr == 0.5 and type(config.lr) is float
    assert GrokkingConfig.quick().with_overrides(steps=np.float64(300.0)).steps == 300
    with pytest.raises(ValueError, match="steps must be an integer"):
        GrokkingConfig.quick().with_overrides(steps=np.float64(300.5))


def test_a_changed_science_field_makes_the_preset_custom_but_a_seed_does_not():
    quick = GrokkingConfig.quick()
    assert quick.with_overrides(seed=3).preset == "quick"
    assert quick.with_overrides(track_every=50, device="cpu").preset == "quick"
    custom = quick.with_overrides(lr=1e-2)
    assert custom.preset == "custom" and custom.scale == "custom"
    with pytest.raises(ValueError, match="preset names a set of values"):
        quick.with_overrides(preset="full")


def test_store_keys_ignore_fields_added_later_while_they_hold_their_defaults():
    """A sweep store written before track_pruning existed keeps its keys."""
    import hashlib
    import json
    from dataclasses import asdict

    from spectral_lab.sweeps import config_key

    config = GrokkingConfig.quick()
    before = {k: v for k, v in asdict(config).items() if k not in ("device", "track_pruning")}
    payload = json.dumps({"class": "GrokkingConfig", "config": before}, sort_keys=True, default=str)
    assert config_key(config) == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert config_key(config.with_overrides(track_pruning=False)) != config_key(config)
    # and a record written before the field existed still matches its config
    assert not config.differences(before)
