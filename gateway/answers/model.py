"""The intent matcher as it is served: numpy only, loaded from one ``.npz`` file.

A linear model over two blocks of features, trained by ``gateway answers train``
(``training.py``, scikit-learn) and exported here as plain arrays:

* the TF-IDF of :func:`gateway.answers.features.grams` (sublinear term frequency, L2-normalised,
  vocabulary and IDF stored with the weights);
* the text's WordLlama sentence vector (``gateway.embedder``), which knows that "parcel" and
  "package" are close, something no n-gram of the training examples can know.

``predict`` returns the most probable intent and a confidence; the model abstains (``intent``
None) below ``threshold``, which training chose by cross-validation for ``target_error``. The
confidence is the :class:`Calibrator`'s probability that the intent is right, from the
classifier's probability, its margin to the runner-up, a second model on the sentence vector
alone and the nearest examples (:func:`calibration_features`); a model without a calibrator
(trained before it existed) uses the classifier's probability.

A closed-set classifier puts every text in some intent, and its probability says only which
intent fits best, not whether any does: with a low threshold (an easy set of intents) a question
about the weather can get an approved answer. So the model also keeps its examples' vectors, and
abstains when the text is further from every example of the chosen intent than ``support_floor``
(the cosine below which only 1% of the training examples fall, each measured against the other
examples of its intent), and when the question's negation or direction (``guards.polarity``)
differs from that of the nearest example: "I don't want a refund" is close to "I want a refund",
and must not get the refund answer. The file
stores, besides the arrays, a JSON ``meta`` record: classes, vocabulary, threshold, the
cross-validated coverage and error, the feature set and embedder names, and a fingerprint of the
examples it was trained on.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.answers.features import FEATURE_SET, grams
from gateway.cache.semantic.guards import Polarity, polarity, polarity_conflict
from gateway.embedder import Embedder, default_embedder

__all__ = ["IntentModel", "ModelFileError", "Prediction"]

FORMAT = "switchboard-intent-model-1"


class ModelFileError(ValueError):
    """A model file that cannot be read or was written for another feature set or embedder."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The best intent (None: abstained), its probability, and the runner-up for explanations."""

    intent: str | None
    best: str
    confidence: float
    runner_up: str | None
    runner_up_confidence: float
    support: float | None = None  # cosine to the nearest example of ``best``
    refused: str | None = None  # why intent is None: threshold, support, negation, ...
    # The classifier's own probability of ``best``; ``confidence`` is the calibrated
    # probability that ``best`` is right when the model has a calibrator (else the same).
    probability: float | None = None


# How many nearest examples vote in the calibration features (see ``calibration_features``):
# a near and a wider neighbourhood.
NEIGHBOURS = (10, 20)
# The nearest examples are looked for among the examples of the few most probable intents only:
# a wrong answer is nearly always one of them, and it is 15 times fewer cosines per match on 77
# intents than all examples (``candidate_intents``).
CANDIDATE_INTENTS = 5
CALIBRATION_FEATURES = (
    "probability",
    "margin",
    "log_odds",
    "vector_model_probability",
    "support",
    "nearest_other_gap",
    "neighbour_vote_10",
    "neighbour_vote_20",
)


def candidate_intents(probs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The ``CANDIDATE_INTENTS`` most probable intents of one text, most probable first."""
    k = min(CANDIDATE_INTENTS, len(probs))
    top = np.argpartition(-probs, k - 1)[:k]
    ordered: npt.NDArray[np.int64] = top[np.argsort(-probs[top], kind="stable")]
    return ordered


def calibration_features(
    probs: npt.NDArray[np.float64],
    vector_probs: npt.NDArray[np.float64],
    sims: npt.NDArray[np.float32],
    example_labels: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """What says whether the classifier's best intent is right, one row per text
    (``CALIBRATION_FEATURES``): its probability, the margin and log-odds to the runner-up, the
    probability a model of the sentence vector alone gives it, the cosine to its nearest example,
    how much nearer an example of another intent is, and the share of the 10 and of the 20 nearest
    examples that have it (``NEIGHBOURS``). ``sims`` and ``example_labels`` are those of the
    examples of the text's :func:`candidate_intents`. Training (cross-validated) and serving call
    this one function."""
    n = probs.shape[0]
    rows = np.arange(n)
    order = np.argsort(-probs, axis=1)
    best, second = order[:, 0], order[:, 1]
    p1, p2 = probs[rows, best], probs[rows, second]
    same = example_labels[None, :] == best[:, None]
    support = np.where(same, sims, -np.inf).max(axis=1, initial=-1.0)
    nearest = sims.max(axis=1, initial=-1.0)
    votes = []
    widest = min(max(NEIGHBOURS), sims.shape[1])
    if widest:
        # One partial sort for every neighbourhood: the widest, nearest first.
        top = np.argpartition(-sims, widest - 1, axis=1)[:, :widest]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1)
        agree = example_labels[top] == best[:, None]
    for neighbours in NEIGHBOURS:
        k = min(neighbours, widest)
        votes.append(agree[:, :k].mean(axis=1) if k else np.zeros(n))
    return np.column_stack(
        [
            p1,
            p1 - p2,
            np.log(p1 + 1e-9) - np.log(p2 + 1e-9),
            vector_probs[rows, best],
            support,
            nearest - support,
            *votes,
        ]
    ).astype(np.float64)


@dataclass(frozen=True, slots=True)
class Calibrator:
    """A logistic regression from :func:`calibration_features` to the probability that the best
    intent is right, fitted on cross-validated predictions of the training examples: the
    model's confidence. The probability alone ranks right above wrong answers worse (on
    Banking77's 77 close intents it answered 3 points less at the same error)."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: float

    def confidence(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "features": list(CALIBRATION_FEATURES),
            "neighbours": list(NEIGHBOURS),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        if data.get("features") != list(CALIBRATION_FEATURES) or data.get(
            "neighbours"
        ) != list(NEIGHBOURS):
            raise ValueError("calibrated on other features; retrain it")
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            coef=np.asarray(data["coef"], dtype=np.float64),
            intercept=float(data["intercept"]),
        )


class IntentModel:
    def __init__(
        self,
        *,
        classes: list[str],
        vocabulary: dict[str, int],
        idf: npt.NDArray[np.float32],
        coef_text: npt.NDArray[np.float32],
        coef_vector: npt.NDArray[np.float32],
        intercept: npt.NDArray[np.float32],
        threshold: float,
        meta: dict[str, Any],
        embedder: Embedder | None = None,
        example_vectors: npt.NDArray[np.float32] | None = None,
        class_offsets: npt.NDArray[np.int64] | None = None,
        support_floor: float | None = None,
        example_polarity: list[Polarity] | None = None,
        coef_vector_only: npt.NDArray[np.float32] | None = None,
        intercept_vector_only: npt.NDArray[np.float32] | None = None,
        calibrator: Calibrator | None = None,
    ) -> None:
        self.classes = classes
        self.vocabulary = vocabulary
        self.idf = idf
        self.coef_text = coef_text
        self.coef_vector = coef_vector
        self.intercept = intercept
        self.threshold = threshold
        self.meta = meta
        self._embedder = embedder
        # Examples' unit vectors sorted by class: class k's are rows offsets[k]:offsets[k + 1].
        self.example_vectors = example_vectors
        self.class_offsets = class_offsets
        self.support_floor = support_floor
        self.example_polarity = example_polarity
        # A second linear model on the sentence vector alone and the calibrator over both: with
        # them ``confidence`` is the calibrated probability of being right (else the plain one).
        self.coef_vector_only = coef_vector_only
        self.intercept_vector_only = intercept_vector_only
        self.calibrator = calibrator

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    # --- scoring -------------------------------------------------------------------------------

    def probabilities(self, text: str) -> npt.NDArray[np.float64]:
        return self._probabilities(text, self._vector(text))

    def _vector(self, text: str) -> npt.NDArray[np.float32] | None:
        if self.coef_vector.shape[0] or self.example_vectors is not None:
            return self.embedder.embed(text)
        return None

    def _probabilities(
        self, text: str, vector: npt.NDArray[np.float32] | None
    ) -> npt.NDArray[np.float64]:
        counts = Counter(g for g in grams(text) if g in self.vocabulary)
        scores = self.intercept.astype(np.float64)
        if counts:
            n = len(counts)
            idx = np.fromiter((self.vocabulary[g] for g in counts), dtype=np.int64, count=n)
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=n))
            values = tf * self.idf[idx]
            values /= math.sqrt(float(values @ values))
            scores = scores + values @ self.coef_text[idx]
        if self.coef_vector.shape[0] and vector is not None:
            scores = scores + vector.astype(np.float64) @ self.coef_vector
        scores -= scores.max()
        exp = np.exp(scores)
        probs: npt.NDArray[np.float64] = exp / exp.sum()
        return probs

    def vector_probabilities(
        self, vector: npt.NDArray[np.float32] | None
    ) -> npt.NDArray[np.float64] | None:
        """The vector-only model's probabilities (None without that model or a vector)."""
        if self.coef_vector_only is None or self.intercept_vector_only is None or vector is None:
            return None
        scores = vector.astype(np.float64) @ self.coef_vector_only + self.intercept_vector_only
        scores -= scores.max()
        exp = np.exp(scores)
        probs: npt.NDArray[np.float64] = exp / exp.sum()
        return probs

    def predict(self, text: str) -> Prediction:
        """The intent of ``text``, or an abstention (``intent`` None) below the threshold."""
        vector = self._vector(text)
        probs = self._probabilities(text, vector)
        order = np.argsort(-probs)
        best = int(order[0])
        second = int(order[1]) if len(order) > 1 else None
        probability = float(probs[best])
        examples, offsets = self.example_vectors, self.class_offsets
        # Cosines to the examples of the most probable intents (the best one first).
        blocks: list[tuple[int, npt.NDArray[np.float32]]] = []
        if vector is not None and examples is not None and offsets is not None:
            for intent in candidate_intents(probs):
                rows = examples[offsets[intent] : offsets[intent + 1]]
                blocks.append((int(intent), np.einsum("ij,j->i", rows, vector)))
        confidence = probability
        vector_probs = self.vector_probabilities(vector)
        if self.calibrator is not None and vector_probs is not None and blocks:
            sims_all = np.concatenate([b for _, b in blocks])
            labels = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in blocks])
            features = calibration_features(
                probs[None, :], vector_probs[None, :], sims_all[None, :], labels
            )
            confidence = float(self.calibrator.confidence(features)[0])
        refused = None
        if not text.strip():
            refused = "no text"
        elif confidence < self.threshold:
            refused = "below threshold"
        support = None
        if blocks and offsets is not None:
            sims = blocks[0][1]
            nearest = int(sims.argmax()) if len(sims) else -1
            support = float(sims[nearest]) if len(sims) else 0.0
            if refused is None and self.support_floor is not None and support < self.support_floor:
                refused = "far from every example"
            if refused is None and self.example_polarity is not None and nearest >= 0:
                # Some example of the intent as close as the floor must say it the same way:
                # negated or not, the same direction.
                asked = polarity(text)
                start = int(offsets[best])
                floor = self.support_floor if self.support_floor is not None else -1.0
                close = [i for i in np.argsort(-sims) if sims[i] >= floor]
                conflicts = [
                    polarity_conflict(asked, self.example_polarity[start + int(i)]) for i in close
                ]
                if conflicts and all(c is not None for c in conflicts):
                    refused = conflicts[0]
        answered = refused is None
        return Prediction(
            intent=self.classes[best] if answered else None,
            best=self.classes[best],
            confidence=confidence,
            runner_up=self.classes[second] if second is not None else None,
            runner_up_confidence=float(probs[second]) if second is not None else 0.0,
            support=support,
            refused=refused,
            probability=probability,
        )

    # --- files ---------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write one ``.npz`` file (float16 text weights: half the size, same decisions)."""
        meta = {
            **self.meta,
            "format": FORMAT,
            "classes": self.classes,
            "vocabulary": self.vocabulary,
            "threshold": self.threshold,
            "support_floor": self.support_floor,
            "example_polarity": (
                None
                if self.example_polarity is None
                else [[negated, sorted(poles)] for negated, poles in self.example_polarity]
            ),
            "calibrator": None if self.calibrator is None else self.calibrator.as_json(),
        }
        extra: dict[str, Any] = {}
        if self.example_vectors is not None and self.class_offsets is not None:
            extra = {
                "example_vectors": self.example_vectors.astype(np.float16),
                "class_offsets": self.class_offsets.astype(np.int64),
            }
        if self.coef_vector_only is not None and self.intercept_vector_only is not None:
            extra["coef_vector_only"] = self.coef_vector_only.astype(np.float32)
            extra["intercept_vector_only"] = self.intercept_vector_only.astype(np.float32)
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                meta=np.array(json.dumps(meta, ensure_ascii=False)),
                idf=self.idf.astype(np.float32),
                coef_text=self.coef_text.astype(np.float16),
                coef_vector=self.coef_vector.astype(np.float32),
                intercept=self.intercept.astype(np.float32),
                **extra,
            )

    @classmethod
    def load(cls, path: Path, *, embedder: Embedder | None = None) -> IntentModel:
        """Read a model file; :class:`ModelFileError` names what is wrong with it."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {
                    name: np.asarray(data[name], dtype=np.float32)
                    for name in ("idf", "coef_text", "coef_vector", "intercept")
                }
                examples = (
                    np.asarray(data["example_vectors"], dtype=np.float32)
                    if "example_vectors" in data.files
                    else None
                )
                offsets = (
                    np.asarray(data["class_offsets"], dtype=np.int64)
                    if "class_offsets" in data.files
                    else None
                )
                vector_only = {
                    name: np.asarray(data[name], dtype=np.float32)
                    for name in ("coef_vector_only", "intercept_vector_only")
                    if name in data.files
                }
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read: {exc}") from exc
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ModelFileError(
                f"{path}: not a model written by `gateway answers train` ({exc})"
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not a model written by `gateway answers train`")
        if meta.get("feature_set") != FEATURE_SET:
            raise ModelFileError(
                f"{path}: trained with features {meta.get('feature_set')!r}, this gateway "
                f"computes {FEATURE_SET!r}; retrain it with `gateway answers train`"
            )
        try:
            calibrator = (
                Calibrator.from_json(meta["calibrator"]) if meta.get("calibrator") else None
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(
                f"{path}: its confidence calibrator cannot be read ({exc}); retrain it with "
                "`gateway answers train`"
            ) from exc
        model = cls(
            classes=list(meta["classes"]),
            vocabulary=dict(meta["vocabulary"]),
            threshold=float(meta["threshold"]),
            meta={
                k: v
                for k, v in meta.items()
                if k not in ("classes", "vocabulary", "example_polarity", "calibrator")
            },
            embedder=embedder,
            example_vectors=examples,
            class_offsets=offsets,
            support_floor=meta.get("support_floor"),
            example_polarity=(
                None
                if meta.get("example_polarity") is None
                else [(bool(n), frozenset(d)) for n, d in meta["example_polarity"]]
            ),
            calibrator=calibrator,
            **vector_only,
            **arrays,
        )
        if arrays["coef_vector"].shape[0] and embedder is not None:
            if meta.get("embedder") != embedder.name:
                raise ModelFileError(
                    f"{path}: trained with embedder {meta.get('embedder')!r}, not "
                    f"{embedder.name!r}; retrain it"
                )
        return model
