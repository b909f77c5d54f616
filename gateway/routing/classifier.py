"""The difficulty classifier: how likely the small tier's answer is worse than the large tier's.

Serving side only: features (``gateway.routing.features``) and precomputed weights from a
versioned JSON file, evaluated with numpy. No scikit-learn, no network, no model download; one
decision (features + score + the features that drove it) takes tens of microseconds.

The model (see ``training.py`` and ``docs/routing.md``) estimates, for a conversation,
``P(strong good)`` and ``P(weak good)`` twice — a logistic regression on the numeric features
(plus their products with the multiple-choice flag, and optionally hashed n-grams) and a small
depth-3 tree ensemble — blends the two estimates of the expected gain
``g = P(strong good) − P(weak good)``, and maps ``g`` through a fitted sigmoid to the probability
that the weak answer is worse. ``top_features`` are each feature's share of ``g``: the linear
part's terms against the training mean, and the trees' path contributions (the change in the
node's mean value at each split), both taken through the sigmoid's slope. Positive values push
toward the large tier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.routing.features import FEATURE_SET, NUMERIC_NAMES, extract, hashed_tokens

__all__ = ["DEFAULT_WEIGHTS", "DifficultyClassifier", "Scored", "default_classifier"]

DEFAULT_WEIGHTS = "router-v1.json"
WEIGHTS_FORMAT = "switchboard-difficulty-classifier"
LEXICAL = "lexical"
LAYOUT_FEATURES = (
    "multiple_choice",
    "option_len",
    "option_numeric",
    "compound_options",
    "stem_no_question",
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Scored:
    """A decision's score in [0, 1] and the features that moved it most (name, share of g)."""

    score: float
    top_features: tuple[tuple[str, float], ...]
    gain: float = 0.0  # the ranking key: estimated P(strong good) − P(weak good)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class DifficultyClassifier:
    """Scores conversations with weights from a JSON file (``load``)."""

    def __init__(self, document: Mapping[str, Any], *, source: str = "<memory>") -> None:
        if document.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{source}: not a difficulty-classifier weights file")
        if document.get("feature_set") != FEATURE_SET:
            raise ValueError(
                f"{source}: trained with feature set {document.get('feature_set')!r}, "
                f"this gateway computes {FEATURE_SET!r}; retrain with `gateway train-router`"
            )
        if list(document.get("numeric_names", ())) != list(NUMERIC_NAMES):
            raise ValueError(f"{source}: numeric feature names differ from this gateway's")
        self.document = document
        self.source = source
        self.version: str = str(document["version"])
        n = len(NUMERIC_NAMES)
        self._mc = NUMERIC_NAMES.index(str(document.get("interaction", "multiple_choice")))

        lin = document["linear"]
        self._lin_w: FloatArray = np.asarray(lin["weights"], dtype=np.float64)
        self._lin_b: FloatArray = np.asarray(lin["bias"], dtype=np.float64)
        self._means: FloatArray = np.asarray(lin["means"], dtype=np.float64)
        # explanations compare a prompt with training prompts of the same layout
        self._means_mc: FloatArray = np.asarray(lin.get("means_mc", lin["means"]), np.float64)
        self._means_plain: FloatArray = np.asarray(lin.get("means_plain", lin["means"]), np.float64)
        if self._lin_w.shape != (2, 2 * n) or self._lin_b.shape != (2,):
            raise ValueError(f"{source}: linear weights have the wrong shape")

        hashed = document.get("hashed")
        self._hash_bits = int(hashed["bits"]) if hashed else 0
        self._hashed: dict[int, tuple[float, float]] = (
            {int(k): (float(v[0]), float(v[1])) for k, v in hashed["weights"].items()}
            if hashed
            else {}
        )

        trees = document["trees"]
        self._depth = int(trees["depth"])
        self._tree_base: FloatArray = np.asarray(trees["base"], dtype=np.float64)
        n_internal = (1 << self._depth) - 1
        n_trees = len(trees["model"])
        feature = np.asarray(trees["feature"], dtype=np.int64).reshape(n_trees, n_internal)
        threshold = np.asarray(trees["threshold"], dtype=np.float64).reshape(feature.shape)
        value = np.asarray(trees["value"], dtype=np.float64).reshape(n_trees, 2 * n_internal + 1)
        model = np.asarray(trees["model"], dtype=np.int64)
        self._n_trees = t = int(feature.shape[0])
        internal = (1 << self._depth) - 1
        if t and (feature.shape[1] != internal or value.shape[1] != 2 * internal + 1):
            raise ValueError(f"{source}: trees are not complete trees of depth {self._depth}")
        if t and (feature.min() < 0 or feature.max() >= n):
            raise ValueError(f"{source}: a tree splits on an unknown feature")
        # Every tree's internal nodes flattened (tree-major, heap order), with the flat index of
        # each node's left child: one take per level walks all trees a level down. The last
        # level's children index the flat leaf/value table instead.
        tree = np.repeat(np.arange(t, dtype=np.int64), internal)
        local = np.tile(np.arange(internal, dtype=np.int64), t)
        child = 2 * local + 1
        self._t_feature: IntArray = feature.ravel()
        self._t_threshold: FloatArray = threshold.ravel()
        self._t_child: IntArray = np.where(child < internal, tree * internal + child, -1)
        self._t_leaf_child: IntArray = tree * (2 * internal + 1) + child
        # For every leaf (by its flat index in the value table): the features split on along
        # its path and the change of the node mean at each split.
        path_feature = np.zeros((t * (2 * internal + 1), self._depth), dtype=np.int64)
        path_delta = np.zeros((t * (2 * internal + 1), self._depth), dtype=np.float64)
        for ti in range(t):
            for leaf in range(internal, 2 * internal + 1):
                node = leaf
                for level in range(self._depth - 1, -1, -1):
                    parent = (node - 1) // 2
                    path_feature[ti * (2 * internal + 1) + leaf, level] = feature[ti, parent]
                    path_delta[ti * (2 * internal + 1) + leaf, level] = (
                        value[ti, node] - value[ti, parent]
                    )
                    node = parent
        # split features of the weak model's trees are offset by n, so one bincount sums both
        self._t_path_index: IntArray = (
            path_feature + n * np.repeat(model, 2 * internal + 1)[:, None]
        )
        self._t_path_delta: FloatArray = path_delta
        self._t_value: FloatArray = value.ravel()
        self._t_roots: IntArray = np.arange(t, dtype=np.int64) * internal
        self._t_model: IntArray = model
        self._t_strong: FloatArray = (model == 0).astype(np.float64)
        self._t_weak: FloatArray = (model == 1).astype(np.float64)
        self._blend = float(document.get("blend", 0.5))
        cal = document.get("calibration", {"a": 1.0, "b": 0.0})
        self._cal_a = float(cal["a"])
        self._cal_b = float(cal["b"])
        self._names: tuple[str, ...] = (*NUMERIC_NAMES, LEXICAL)
        self._layout: IntArray = np.array([NUMERIC_NAMES.index(f) for f in LAYOUT_FEATURES])

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> DifficultyClassifier:
        """The classifier from a weights file; the shipped ``router-v1.json`` by default."""
        if path is None:
            ref = resources.files("gateway.routing").joinpath("weights", DEFAULT_WEIGHTS)
            return cls(json.loads(ref.read_text(encoding="utf-8")), source=DEFAULT_WEIGHTS)
        p = Path(path)
        return cls(json.loads(p.read_text(encoding="utf-8")), source=str(p))

    @property
    def metrics(self) -> Mapping[str, Any]:
        return dict(self.document.get("metrics", {}))

    # --- scoring ------------------------------------------------------------------------------

    def score_text(self, text: str, *, top: int = 3) -> Scored:
        """Score a single user prompt."""
        return self.score([{"role": "user", "content": text}], top=top)

    def score(
        self, messages: Sequence[Mapping[str, Any]], tools: bool = False, *, top: int = 3
    ) -> Scored:
        """Score a conversation (OpenAI-style messages) and name the ``top`` features behind it."""
        feats = extract(messages, tools, with_tokens=bool(self._hashed))
        x = np.array(feats.numeric, dtype=np.float64)
        n = x.shape[0]
        xa = np.concatenate((x, x * x[self._mc]))
        z = self._lin_w @ xa + self._lin_b
        lexical = (0.0, 0.0)
        if self._hashed:
            counts: dict[int, int] = {}
            for b in hashed_tokens(feats.tokens, self._hash_bits):
                counts[b] = counts.get(b, 0) + 1
            ls = lw = 0.0
            for b, c in counts.items():
                w = self._hashed.get(b)
                if w is not None:
                    t = math.log1p(c)
                    ls += w[0] * t
                    lw += w[1] * t
            lexical = (ls, lw)
        zs = float(z[0]) + lexical[0]
        zw = float(z[1]) + lexical[1]
        ps = _sigmoid(zs)
        pw = _sigmoid(zw)
        blend = self._blend
        gain = blend * (ps - pw)
        qs = qw = 0.5
        leaf: IntArray | None = None
        if self._n_trees:
            right = x.take(self._t_feature) > self._t_threshold
            at = self._t_roots
            for _ in range(self._depth - 1):
                at = self._t_child.take(at) + right.take(at)
            leaf = self._t_leaf_child.take(at) + right.take(at)
            values = self._t_value.take(leaf)
            qs = _sigmoid(float(self._tree_base[0] + values @ self._t_strong))
            qw = _sigmoid(float(self._tree_base[1] + values @ self._t_weak))
            gain += (1.0 - blend) * (qs - qw)
        score = _sigmoid(self._cal_a * gain + self._cal_b)
        if not top:
            return Scored(score, (), gain)

        # Each feature's share of g, through each sigmoid's slope. Linear part: its terms
        # against the mean training prompt of the same layout.
        mc = bool(x[self._mc] > 0.0)
        ds = blend * ps * (1.0 - ps)
        dw = blend * pw * (1.0 - pw)
        terms = self._lin_w * (xa - (self._means_mc if mc else self._means_plain))
        terms = terms[:, :n] + terms[:, n:]
        contrib = ds * terms[0] - dw * terms[1]
        if leaf is not None:
            # trees: each split's change of the node mean, credited to the split's feature
            es = (1.0 - blend) * qs * (1.0 - qs)
            ew = (1.0 - blend) * qw * (1.0 - qw)
            tree = np.bincount(
                self._t_path_index[leaf].ravel(),
                weights=self._t_path_delta[leaf].ravel(),
                minlength=2 * n,
            )
            contrib += es * tree[:n] - ew * tree[n:]
        if not mc:
            # "not a multiple-choice question" explains nothing about a chat turn
            contrib[self._layout] = 0.0
        order: list[int] = np.argsort(np.abs(contrib))[: -top - 1 : -1].tolist()
        picked = [(self._names[i], float(contrib[i])) for i in order]
        lexical_share = ds * lexical[0] - dw * lexical[1]
        if lexical_share != 0.0:
            picked.append((LEXICAL, lexical_share))
            picked.sort(key=lambda item: -abs(item[1]))
        top_features = tuple((name, round(v, 4)) for name, v in picked[:top] if v != 0.0)
        return Scored(score, top_features, gain)


@lru_cache(maxsize=1)
def default_classifier() -> DifficultyClassifier:
    """The shipped classifier, loaded once per process."""
    return DifficultyClassifier.load()
