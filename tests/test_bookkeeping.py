"""spectral_lab.bookkeeping: the history, tracker and stamp the three training loops share."""

import numpy as np
import pytest
from torch import nn

from spectral_lab.bookkeeping import History, config_tracker, stamp
from spectral_lab.experiments.grokking import GrokkingConfig
from spectral_lab.models import MLP


def test_history_lists_arrays_and_resumes_up_to_a_step():
    history = History(("step", "loss", "acc"))
    for step in (0, 5, 10):
        history.add(step, {"loss": 1.0 / (step + 1), "acc": step / 10})
    arrays = history.arrays()
    assert arrays["step"].dtype == np.int64 and arrays["loss"].dtype == np.float64
    np.testing.assert_array_equal(arrays["step"], [0, 5, 10])
    assert history.lists()["acc"] == [0.0, 0.5, 1.0]
    earlier = History(("step", "loss", "acc"), history.lists()).until(5)
    assert len(earlier) == 2 and earlier.lists()["step"] == [0, 5]
    with pytest.raises(ValueError, match="first field is 'step'"):
        History(("loss", "step"))
    with pytest.raises(KeyError):
        history.add(15, {"loss": 0.1})  # every field but step must be given


def test_config_tracker_uses_the_config_and_the_models_own_pairs():
    config = GrokkingConfig.quick()
    model = MLP((8, 6, 4))
    tracker = config_tracker(model, config)
    assert tracker.every == config.track_every and tracker.top_k == config.top_k
    assert tracker.pairs == model.layer_pairs()
    plain = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    assert config_tracker(plain, config).pairs == [("0", "2")]  # inferred


def test_stamp_writes_what_ran_and_keeps_an_existing_config():
    config = GrokkingConfig.quick()
    record = config_tracker(MLP((8, 6, 4)), config).record
    stamp(record, config, "cpu", note="x")
    assert record.meta["experiment"] == "grokking" and record.meta["preset"] == "quick"
    assert record.meta["device"] == "cpu" and record.meta["note"] == "x"
    assert record.meta["config"]["p"] == config.p
    record.meta["config"] = {"kept": True}
    stamp(record, config, "cpu")
    assert record.meta["config"] == {"kept": True}
