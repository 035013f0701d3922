import math

import pytest
import torch

from spectral_lab.data import digits
from spectral_lab.experiments.classifier import (
    ClassifierConfig,
    batch_order,
    evaluate_classifier,
    fit,
)

# digits with a narrow MLP: a whole run of 4 epochs is ~170 steps, well under a second
TINY = ClassifierConfig(
    preset="tiny", dataset="digits", hidden=(32,), epochs=4, lr=0.05, eval_every=21, track_every=42
)


@pytest.fixture(scope="module")
def data():
    return digits()


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_run_learns_digits_and_records_spectra(data):
    result = fit(TINY, data=data)
    steps = TINY.total_steps(len(data.train_y))
    assert result.step == steps == 4 * (len(data.train_y) // 32)
    assert result.history["test_acc"][-1] > 0.85  # an easy task: a few epochs are enough
    assert result.history["step"][0] == 0 and result.history["step"][-1] == steps
    record = result.record
    assert record.layers == ["fc1", "fc2"] and record.pairs == [("fc1", "fc2")]
    assert record.steps[0] == 0 and record.steps[-1] == steps
    assert set(record.scalars) >= {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert record.config["dataset"] == "digits" and record.meta["experiment"] == "classifier"


def test_same_config_same_run(data):
    a, b = fit(TINY, data=data, track=False), fit(TINY, data=data, track=False)
    assert same_weights(a.model, b.model)


def test_a_run_stopped_and_continued_equals_the_run_in_one_piece(data):
    whole = fit(TINY, data=data, track=False)
    first = fit(TINY, data=data, stop_step=50, track=False)
    rest = fit(
        TINY,
        model=first.model,
        data=data,
        start_step=50,
        optimizer_state=first.optimizer_state,
        track=False,
    )
    assert same_weights(rest.model, whole.model)


def test_branches_with_another_data_order_differ_and_share_no_momentum(data):
    trunk = fit(TINY, data=data, stop_step=30, track=False)
    state = {k: v.clone() for k, v in trunk.model.state_dict().items()}
    branches = []
    for seed in (1, 1, 2):
        model = TINY.make_model(data)
        model.load_state_dict(state)
        branches.append(
            fit(
                TINY,
                model=model,
                data=data,
                start_step=30,
                optimizer_state=trunk.optimizer_state,
                data_seed=seed,
                track=False,
            ).model
        )
    assert same_weights(
        branches[0], branches[1]
    )  # the trunk's optimizer state was not changed by branch 1
    assert not same_weights(branches[0], branches[2])


def test_batch_order_depends_only_on_seed_and_epoch():
    assert torch.equal(batch_order(3, 5, 100), batch_order(3, 5, 100))
    assert not torch.equal(batch_order(3, 5, 100), batch_order(3, 6, 100))
    assert not torch.equal(batch_order(3, 5, 100), batch_order(4, 5, 100))
    assert sorted(batch_order(0, 0, 50).tolist()) == list(range(50))


def test_masked_weights_stay_zero_and_the_rest_trains(data):
    model = TINY.make_model(data)
    # (not seed 0: the model was initialised from that same stream, and the mask would keep exactly
    # the negative weights, leaving every hidden unit dead)
    keep = torch.rand(model.fc1.weight.shape, generator=torch.Generator().manual_seed(1234)) < 0.3
    mask = {"fc1.weight": keep.float()}
    before = model.fc1.weight.detach().clone()
    result = fit(TINY, model=model, data=data, mask=mask, track=False)
    W = result.model.fc1.weight.detach()
    assert torch.all(W[mask["fc1.weight"] == 0] == 0)
    assert not torch.allclose(W[mask["fc1.weight"] == 1], before[mask["fc1.weight"] == 1])
    assert result.history["train_acc"][-1] > 0.5


def test_cosine_schedule_and_constant():
    config = TINY.with_overrides(lr=0.2)
    assert config.lr_at(0, 100) == pytest.approx(0.2)
    assert config.lr_at(50, 100) == pytest.approx(0.1)
    assert config.lr_at(100, 100) == pytest.approx(0.0, abs=1e-12)
    assert config.with_overrides(schedule="constant").lr_at(70, 100) == 0.2
    assert math.isclose(config.lr_at(25, 100), 0.1 * (1 + math.cos(math.pi / 4)))


def test_label_noise_reaches_the_data_and_the_test_set_stays_true():
    clean, noisy = TINY.make_data(), TINY.with_overrides(label_noise=1.0).make_data()
    assert bool(noisy.randomized.all()) and torch.equal(noisy.test_y, clean.test_y)
    assert not torch.equal(noisy.train_y, clean.train_y)


def test_evaluate_restores_the_training_mode(data):
    model = TINY.make_model(data)
    model.train()
    scores = evaluate_classifier(model, data)
    assert model.training and set(scores) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert 0.0 <= scores["test_acc"] <= 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "cifar"}, "dataset must be one of mnist1d, digits"),
        ({"schedule": "step"}, "schedule must be one of cosine, constant"),
        ({"label_noise": 1.5}, r"label_noise must lie in \[0, 1\]"),
        ({"hidden": "256,0"}, "hidden must be a positive integer"),
        ({"momentum": 1.0}, r"momentum must lie in \[0, 1\)"),
        ({"track_every": 50}, "must be a multiple of eval_every"),
        ({"hidden": "256,2.5"}, "hidden must be an integer"),
    ],
)
def test_bad_configs_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        TINY.with_overrides(**overrides)


def test_bad_calls_name_the_problem(data):
    with pytest.raises(ValueError, match="start_step"):
        fit(TINY, data=data, start_step=10, stop_step=5, track=False)
    with pytest.raises(ValueError, match="not a parameter"):
        fit(TINY, data=data, mask={"fc9.weight": torch.ones(1)}, track=False)
    with pytest.raises(ValueError, match="has shape"):
        fit(TINY, data=data, mask={"fc1.weight": torch.ones(3, 3)}, track=False)
    with pytest.raises(ValueError, match="batch_size=5000 is larger"):
        fit(TINY.with_overrides(batch_size=5000), data=data, track=False)
    with pytest.raises(ValueError, match="Use model='mlp' for images"):
        TINY.with_overrides(model="cnn").make_model(digits(flatten=False))


def test_mnist1d_quick_preset_shape():
    config = ClassifierConfig.quick()
    assert (config.dataset, config.hidden, config.batch_size, config.epochs) == (
        "mnist1d",
        (256, 256),
        32,
        40,
    )
    assert config.total_steps(4000) == 5000
    assert set(ClassifierConfig.presets()) == {"quick", "quick_cnn"}
