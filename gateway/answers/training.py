"""Training the intent matcher (scikit-learn, the ``train`` extra) and choosing its threshold.

``train(examples, target_error=0.01)``:

1. cross-validation (stratified, up to 5 folds): every example is predicted by a model that did
   not see it, giving an honest confidence and right/wrong for each;
2. the confidence is calibrated: a small logistic regression learns, from those held-out
   predictions, which ones are right (:func:`gateway.answers.model.calibration_features`: the
   probability, the margin to the runner-up, what a model of the sentence vector alone and the
   nearest examples say); its own held-out output is the confidence;
3. the threshold is the lowest confidence at which the examples answered (confidence ≥ it) are
   wrong at most ``target_error`` of the time: the largest coverage the target allows;
4. the final model is fitted on all examples and exported to numpy arrays
   (:class:`~gateway.answers.model.IntentModel`), so serving never imports scikit-learn.

Nothing here is tuned to a data set: the features, the regularisation (C=10) and the folds are
fixed, and the threshold comes from the examples themselves.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.answers.features import FEATURE_SET, grams
from gateway.answers.model import (
    CALIBRATION_FEATURES,
    Calibrator,
    IntentModel,
    calibration_features,
    candidate_intents,
)
from gateway.cache.semantic.guards import polarity
from gateway.embedder import Embedder, default_embedder

__all__ = ["Example", "TrainingError", "choose_threshold", "fingerprint", "train"]

C = 10.0
MAX_FOLDS = 5
MIN_EXAMPLES_PER_INTENT = 2
# Share of training examples allowed below the support floor (see IntentModel).
SUPPORT_QUANTILE = 0.01

Progress = Callable[[str, int, int], None]


class TrainingError(ValueError):
    """The examples cannot train a matcher (too few, one intent only)."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    intent: str


def fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the examples (order-independent): tells a model trained on other examples."""
    lines = sorted(json.dumps([e.intent, e.text], ensure_ascii=False) for e in examples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def choose_threshold(
    confidence: npt.NDArray[np.float64], correct: npt.NDArray[np.bool_], target_error: float
) -> tuple[float, float, float]:
    """``(threshold, coverage, error)``: the lowest confidence whose answered set (confidence ≥
    it) is wrong at most ``target_error`` of the time. Nothing answered: threshold just above 1."""
    order = np.argsort(-confidence, kind="stable")
    wrong = np.cumsum(~correct[order])
    answered = np.arange(1, len(order) + 1)
    ok = np.nonzero(wrong <= target_error * answered)[0]
    # Ties: a threshold answers every example at its confidence, so stop before a tie's end
    # would cross the target.
    sorted_conf = confidence[order]
    for k in ok[::-1]:
        if k + 1 < len(order) and sorted_conf[k + 1] == sorted_conf[k]:
            continue
        return float(sorted_conf[k]), (k + 1) / len(order), float(wrong[k] / (k + 1))
    return 1.0 + 1e-9, 0.0, 0.0


def support(
    vectors: npt.NDArray[np.float32], labels: npt.NDArray[Any], classes: Sequence[str]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], float, npt.NDArray[np.int64]]:
    """Examples' vectors sorted by class, the class offsets, the support floor (the
    ``SUPPORT_QUANTILE`` quantile of each example's cosine to its nearest other example of the
    same intent), and the examples' indices in that order."""
    blocks, offsets, nearest, order = [], [0], [], []
    for name in classes:
        members = np.nonzero(labels == name)[0]
        order.extend(members.tolist())
        block = vectors[members]
        blocks.append(block)
        offsets.append(offsets[-1] + len(block))
        if len(block) > 1:
            sims = block @ block.T
            np.fill_diagonal(sims, -np.inf)
            nearest.extend(sims.max(axis=1).tolist())
    floor = float(np.quantile(nearest, SUPPORT_QUANTILE)) if nearest else -1.0
    return (
        np.vstack(blocks),
        np.asarray(offsets, dtype=np.int64),
        floor,
        np.asarray(order, dtype=np.int64),
    )


def _fit_vector_only(labels: Any, vectors: npt.NDArray[np.float32]) -> Any:
    linear: Any = importlib.import_module("sklearn.linear_model")
    classifier = linear.LogisticRegression(C=C, max_iter=3000)
    classifier.fit(vectors, list(labels))
    return classifier


def _fit_calibrator(
    features: npt.NDArray[np.float64], correct: npt.NDArray[np.bool_], folds: int
) -> tuple[Calibrator, npt.NDArray[np.float64]]:
    """The calibrator fitted on every held-out prediction, and its own held-out confidences
    (what the threshold is chosen on: the calibrator never scores what it was fitted on)."""
    linear: Any = importlib.import_module("sklearn.linear_model")
    selection: Any = importlib.import_module("sklearn.model_selection")

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    z = (features - mean) / scale

    def fit(rows: npt.NDArray[np.int64]) -> Calibrator:
        model = linear.LogisticRegression(C=1.0, max_iter=2000)
        model.fit(z[rows], correct[rows])
        return Calibrator(
            mean=mean,
            scale=scale,
            coef=np.asarray(model.coef_[0], dtype=np.float64),
            intercept=float(model.intercept_[0]),
        )

    everything = np.arange(len(correct))
    if correct.all() or not correct.any():
        # One outcome only: nothing to learn; rank by the classifier's probability.
        coef = np.zeros(len(mean))
        coef[0] = scale[0]
        flat = Calibrator(mean=mean, scale=scale, coef=coef, intercept=0.0)
        return flat, flat.confidence(features)
    held = np.zeros(len(correct))
    splits = min(folds, int(correct.sum()), int((~correct).sum()))
    if splits >= 2:
        splitter = selection.StratifiedKFold(n_splits=splits, shuffle=True, random_state=1)
        for fit_idx, held_idx in splitter.split(features, correct):
            held[held_idx] = fit(fit_idx).confidence(features[held_idx])
    else:
        held = fit(everything).confidence(features)
    return fit(everything), held


def _fit(
    texts: Sequence[str], labels: Any, vectors: npt.NDArray[np.float32]
) -> tuple[Any, Any]:
    sparse: Any = importlib.import_module("scipy.sparse")
    text: Any = importlib.import_module("sklearn.feature_extraction.text")
    linear: Any = importlib.import_module("sklearn.linear_model")

    vectoriser = text.TfidfVectorizer(analyzer=grams, sublinear_tf=True, dtype=np.float32)
    x = sparse.hstack([vectoriser.fit_transform(texts), sparse.csr_matrix(vectors)]).tocsr()
    classifier = linear.LogisticRegression(C=C, max_iter=3000)
    classifier.fit(x, list(labels))
    return vectoriser, classifier


def _predict(
    vectoriser: Any, classifier: Any, texts: Sequence[str], vectors: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    sparse: Any = importlib.import_module("scipy.sparse")
    x = sparse.hstack([vectoriser.transform(texts), sparse.csr_matrix(vectors)]).tocsr()
    probs: npt.NDArray[np.float64] = classifier.predict_proba(x)
    return probs


def train(
    examples: Sequence[Example],
    *,
    target_error: float = 0.01,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> IntentModel:
    """Cross-validate, choose the threshold, fit on everything, export. Needs scikit-learn."""
    selection: Any = importlib.import_module("sklearn.model_selection")

    if not 0.0 <= target_error < 1.0:
        raise TrainingError(f"the target error must be in [0, 1), not {target_error}")
    counts = Counter(e.intent for e in examples)
    if len(counts) < 2:
        raise TrainingError(
            f"training needs at least 2 intents, got {len(counts)}: a matcher with one intent "
            "cannot tell it from anything"
        )
    thin = sorted(intent for intent, n in counts.items() if n < MIN_EXAMPLES_PER_INTENT)
    if thin:
        raise TrainingError(
            f"intent(s) with fewer than {MIN_EXAMPLES_PER_INTENT} examples: "
            f"{', '.join(thin[:10])}; add examples (10 or more make a matcher worth serving)"
        )
    report = progress or (lambda stage, done, total: None)
    embedder = embedder or default_embedder()
    started = time.monotonic()
    texts = [e.text for e in examples]
    labels = np.array([e.intent for e in examples])
    vectors = embedder.embed_many(texts)

    folds = min(MAX_FOLDS, min(counts.values()))
    splitter = selection.StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    features = np.zeros((len(examples), len(CALIBRATION_FEATURES)))
    correct = np.zeros(len(examples), dtype=bool)
    report("cv", 0, folds)
    for i, (fit_idx, held_idx) in enumerate(splitter.split(texts, labels), 1):
        vectoriser, classifier = _fit(
            [texts[j] for j in fit_idx], labels[fit_idx], vectors[fit_idx]
        )
        vector_only = _fit_vector_only(labels[fit_idx], vectors[fit_idx])
        probs = _predict(vectoriser, classifier, [texts[j] for j in held_idx], vectors[held_idx])
        classes_ = list(classifier.classes_)
        fold_labels = np.array([classes_.index(c) for c in labels[fit_idx]], dtype=np.int64)
        vector_probs = vector_only.predict_proba(vectors[held_idx])
        sims = vectors[held_idx] @ vectors[fit_idx].T
        for row, j in enumerate(held_idx):
            # As served: only the examples of the text's most probable intents.
            near = np.isin(fold_labels, candidate_intents(probs[row]))
            features[j] = calibration_features(
                probs[row : row + 1],
                vector_probs[row : row + 1],
                sims[row : row + 1, near],
                fold_labels[near],
            )[0]
        correct[held_idx] = classifier.classes_[probs.argmax(axis=1)] == labels[held_idx]
        report("cv", i, folds)
    calibrator, confidence = _fit_calibrator(features, correct, folds)
    threshold, coverage, error = choose_threshold(confidence, correct, target_error)

    report("fit", 0, 1)
    vectoriser, classifier = _fit(texts, labels, vectors)
    vector_only = _fit_vector_only(labels, vectors)
    report("fit", 1, 1)
    n_text = len(vectoriser.vocabulary_)
    coef = np.asarray(classifier.coef_, dtype=np.float32).T  # features × classes
    intercept = np.asarray(classifier.intercept_, dtype=np.float32)
    coef, intercept = _all_logits(coef, intercept)
    coef_vector_only, intercept_vector_only = _all_logits(
        np.asarray(vector_only.coef_, dtype=np.float32).T,
        np.asarray(vector_only.intercept_, dtype=np.float32),
    )
    classes = [str(c) for c in classifier.classes_]
    example_vectors, class_offsets, floor, order = support(vectors, labels, classes)
    polarities = [polarity(texts[i]) for i in order]
    meta = {
        "feature_set": FEATURE_SET,
        "support_quantile": SUPPORT_QUANTILE,
        "embedder": embedder.name,
        "target_error": target_error,
        "cv": {
            "folds": folds,
            "coverage": round(float(coverage), 4),
            "error": round(error, 4),
            "accuracy": round(float(correct.mean()), 4),
        },
        "examples": len(examples),
        "fingerprint": fingerprint(examples),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    return IntentModel(
        classes=classes,
        vocabulary={str(k): int(v) for k, v in vectoriser.vocabulary_.items()},
        idf=np.asarray(vectoriser.idf_, dtype=np.float32),
        coef_text=coef[:n_text],
        coef_vector=coef[n_text:],
        intercept=intercept,
        threshold=threshold,
        meta=meta,
        embedder=embedder,
        example_vectors=example_vectors,
        class_offsets=class_offsets,
        support_floor=floor,
        example_polarity=polarities,
        coef_vector_only=coef_vector_only,
        intercept_vector_only=intercept_vector_only,
        calibrator=calibrator,
    )


def _all_logits(
    coef: npt.NDArray[np.float32], intercept: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Features × classes weights; with two intents scikit-learn keeps one logit (for the
    second class), so the first gets zeros."""
    if coef.shape[1] == 1:
        coef = np.hstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros(1, dtype=np.float32), intercept])
    return coef, intercept
