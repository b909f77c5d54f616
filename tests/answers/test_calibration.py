"""The matcher's calibrated confidence: features from held-out predictions, a logistic model of
being right, and the same confidence after a save and a load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway.answers.model import (
    CALIBRATION_FEATURES,
    Calibrator,
    IntentModel,
    ModelFileError,
    calibration_features,
    candidate_intents,
)
from gateway.answers.training import _fit_calibrator


def test_features_name_the_best_intent_its_margin_and_its_neighbours() -> None:
    probs = np.array([[0.7, 0.2, 0.1]])
    vector_probs = np.array([[0.6, 0.3, 0.1]])
    sims = np.array([[0.9, 0.8, 0.95, 0.1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 2])
    row = calibration_features(probs, vector_probs, sims, labels)[0]
    values = dict(zip(CALIBRATION_FEATURES, row, strict=True))
    assert values["probability"] == pytest.approx(0.7)
    assert values["margin"] == pytest.approx(0.5)
    assert values["log_odds"] == pytest.approx(np.log(0.7 / 0.2), rel=1e-6)
    assert values["vector_model_probability"] == pytest.approx(0.6)
    assert values["support"] == pytest.approx(0.9)  # nearest example of intent 0
    assert values["nearest_other_gap"] == pytest.approx(0.05)  # intent 1's example is nearer
    assert values["neighbour_vote_10"] == pytest.approx(0.5)  # 2 of the 4 examples (k > rows)
    assert values["neighbour_vote_20"] == pytest.approx(0.5)


def test_the_calibrator_learns_which_predictions_are_right() -> None:
    rng = np.random.default_rng(0)
    n = 400
    features = rng.random((n, len(CALIBRATION_FEATURES)))
    # Right when the neighbours agree, whatever the probability says.
    correct = features[:, 6] > 0.3  # neighbour_vote_10
    calibrator, held_out = _fit_calibrator(features, correct, folds=5)
    assert held_out.shape == (n,)
    assert held_out[correct].mean() > held_out[~correct].mean() + 0.3
    low, high = features[:1].copy(), features[:1].copy()
    low[0, 6], high[0, 6] = 0.0, 1.0
    assert calibrator.confidence(low)[0] < 0.5 < calibrator.confidence(high)[0]


def test_all_right_keeps_the_probability_order() -> None:
    others = np.zeros((8, len(CALIBRATION_FEATURES) - 1))
    features = np.column_stack([np.linspace(0.2, 0.9, 8), others])
    calibrator, held_out = _fit_calibrator(features, np.ones(8, dtype=bool), folds=5)
    assert list(np.argsort(held_out)) == list(range(8))
    assert isinstance(calibrator, Calibrator)


def test_a_trained_model_is_calibrated_and_keeps_it_in_its_file(
    model: IntentModel, example_model: Path
) -> None:
    assert model.calibrator is not None and model.coef_vector_only is not None
    prediction = model.predict("where is my parcel")
    assert prediction.probability is not None and 0.0 <= prediction.confidence <= 1.0
    again = IntentModel.load(example_model).predict("where is my parcel")
    assert again.confidence == pytest.approx(prediction.confidence)


def test_a_calibrator_for_other_features_is_refused(example_model: Path, tmp_path: Path) -> None:
    with np.load(example_model) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["calibrator"]["features"] == list(CALIBRATION_FEATURES)
    meta["calibrator"]["features"] = ["probability"]  # what another version would have written
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / "other.npz"
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    with pytest.raises(ModelFileError, match="calibrator.*retrain"):
        IntentModel.load(path)


def test_neighbours_are_looked_for_among_the_most_probable_intents() -> None:
    probs = np.array([0.05, 0.4, 0.02, 0.3, 0.1, 0.08, 0.04])
    assert list(candidate_intents(probs)) == [1, 3, 4, 5, 0]
    assert list(candidate_intents(np.array([0.3, 0.7]))) == [1, 0]
