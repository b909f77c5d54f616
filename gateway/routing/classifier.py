"""The difficulty classifier: how likely the small tier's answer is worse than the large tier's.

Serving side only: features (``gateway.routing.features``) and precomputed weights from a
versioned JSON file. No scikit-learn, no network, no model download; one decision (features +
score + the features that drove it) takes tens of microseconds.

The model (see ``training.py`` and ``docs/routing.md``) estimates, for a conversation,
``P(strong good)`` and ``P(weak good)`` twice — a logistic regression on the numeric features
(plus their products with the multiple-choice flag, and optionally hashed n-grams) and a small
depth-3 tree ensemble — blends the two estimates of the expected gain
``g = P(strong good) − P(weak good)``, and maps ``g`` through a fitted sigmoid to the probability
that the weak answer is worse. ``top_features`` are each feature's share of ``g``: the linear
part's terms against the training mean, and the trees' path contributions (the change in the
node's mean value at each split), both taken through the sigmoid's slope. Positive values push
toward the large tier.

How a decision is evaluated: the feature vector has ~50 entries and the ensemble ~120 trees of
depth 3, sizes at which each numpy call (~1 µs) costs more than the arithmetic it does. So at load
time the weights are compiled into two plain Python functions (``_model_source``): the linear
part as straight-line expressions (the interaction half folded in, the multiple-choice flag being
0 or 1), every tree as nested ``if``s on local variables, and the explanation's per-feature sums
accumulated at the leaves. Constants are written with ``repr(float)``, which reads back as the
same double. The result equals the matrix formulation up to summation order (~1e-16; checked
against it in ``tests/routing/test_classifier_equivalence.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

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

_N = TypeVar("_N", int, float)
# (numeric features, lexical strong term, lexical weak term) -> (score, gain)
ScoreFn = Callable[[Sequence[float], float, float], tuple[float, float]]
# ... -> (score, gain, slope strong, slope weak, each numeric feature's share of gain)
ExplainFn = Callable[
    [Sequence[float], float, float], tuple[float, float, float, float, list[float]]
]


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
        mc = NUMERIC_NAMES.index(str(document.get("interaction", "multiple_choice")))

        # The weights are read into plain lists, not numpy arrays: the classifier serves every
        # request of the default configs, and importing numpy costs ~15 MiB of resident memory
        # in a gateway whose tenants may use no numpy-backed feature (approved answers, the
        # semantic cache). float()/int() convert as np.asarray(dtype=float64/int64) did.
        lin = document["linear"]
        lin_w = _float_matrix(lin["weights"])
        lin_b = _float_vector(lin["bias"])
        # explanations compare a prompt with training prompts of the same layout
        means_mc = _float_vector(lin.get("means_mc", lin["means"]))
        means_plain = _float_vector(lin.get("means_plain", lin["means"]))
        if lin_w is None or len(lin_w) != 2 or any(len(row) != 2 * n for row in lin_w):
            raise ValueError(f"{source}: linear weights have the wrong shape")
        if lin_b is None or len(lin_b) != 2:
            raise ValueError(f"{source}: linear weights have the wrong shape")
        if means_mc is None or means_plain is None:
            raise ValueError(f"{source}: linear means have the wrong shape")
        if len(means_mc) != 2 * n or len(means_plain) != 2 * n:
            raise ValueError(f"{source}: linear means have the wrong shape")

        hashed = document.get("hashed")
        self._hash_bits = int(hashed["bits"]) if hashed else 0
        self._hashed: dict[int, tuple[float, float]] = (
            {int(k): (float(v[0]), float(v[1])) for k, v in hashed["weights"].items()}
            if hashed
            else {}
        )

        trees = document["trees"]
        depth = int(trees["depth"])
        tree_base = [float(v) for v in trees["base"]]
        internal = (1 << depth) - 1
        n_trees = len(trees["model"])
        feature = _reshape(trees["feature"], n_trees, internal, int)
        threshold = _reshape(trees["threshold"], n_trees, internal, float)
        value = _reshape(trees["value"], n_trees, 2 * internal + 1, float)
        model = [int(v) for v in trees["model"]]
        if n_trees and any(f < 0 or f >= n for row in feature for f in row):
            raise ValueError(f"{source}: a tree splits on an unknown feature")
        if n_trees and any(m < 0 or m > 1 for m in model):
            raise ValueError(f"{source}: a tree belongs to neither model (0 strong, 1 weak)")
        blend = float(document.get("blend", 0.5))
        cal = document.get("calibration", {"a": 1.0, "b": 0.0})
        spec = _ModelSpec(
            n=n,
            mc=mc,
            weights=(lin_w[0], lin_w[1]),
            bias=(lin_b[0], lin_b[1]),
            means_mc=means_mc,
            means_plain=means_plain,
            layout=tuple(NUMERIC_NAMES.index(f) for f in LAYOUT_FEATURES),
            depth=depth,
            tree_base=(tree_base[0], tree_base[1]) if n_trees else (0.0, 0.0),
            tree_model=model,
            tree_feature=feature,
            tree_threshold=threshold,
            tree_value=value,
            blend=blend,
            cal_a=float(cal["a"]),
            cal_b=float(cal["b"]),
        )
        self._spec = spec
        # compiling takes tens of ms: the score-only form waits for its first use (top=0)
        self._explain_fn = cast(ExplainFn, _compile_model(spec, source, explain=True))
        self._score_fn: ScoreFn | None = None
        self._names: tuple[str, ...] = (*NUMERIC_NAMES, LEXICAL)

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
        ls = lw = 0.0
        if self._hashed:
            counts: dict[int, int] = {}
            for b in hashed_tokens(feats.tokens, self._hash_bits):
                counts[b] = counts.get(b, 0) + 1
            for b, c in counts.items():
                w = self._hashed.get(b)
                if w is not None:
                    t = math.log1p(c)
                    ls += w[0] * t
                    lw += w[1] * t
        if not top:
            if self._score_fn is None:
                self._score_fn = cast(
                    ScoreFn, _compile_model(self._spec, self.source, explain=False)
                )
            score, gain = self._score_fn(feats.numeric, ls, lw)
            return Scored(score, (), gain)

        score, gain, ds, dw, contrib = self._explain_fn(feats.numeric, ls, lw)
        # The `top` largest shares by magnitude: one C-level sort of ~50 indices beats numpy's
        # argsort once the array would have to be built. Exact ties keep feature order.
        magnitude = list(map(abs, contrib))
        order = sorted(range(len(contrib)), key=magnitude.__getitem__, reverse=True)[:top]
        names = self._names
        picked = [(names[i], contrib[i]) for i in order]
        lexical_share = ds * ls - dw * lw
        if lexical_share != 0.0:
            picked.append((LEXICAL, lexical_share))
            picked.sort(key=lambda item: -abs(item[1]))
        top_features = tuple((name, round(v, 4)) for name, v in picked[:top] if v != 0.0)
        return Scored(score, top_features, gain)


# --- reading the weights (plain Python: see DifficultyClassifier.__init__) ------------------------


def _float_vector(values: Any) -> list[float] | None:
    """A flat list of numbers as floats; None when an entry is itself a list (wrong shape)."""
    if any(isinstance(v, list | tuple) for v in values):
        return None
    return [float(v) for v in values]


def _float_matrix(rows: Any) -> list[list[float]] | None:
    """A list of flat lists of numbers as floats; None when it is not two-dimensional."""
    out: list[list[float]] = []
    for row in rows:
        if not isinstance(row, list | tuple):
            return None
        vector = _float_vector(row)
        if vector is None:
            return None
        out.append(vector)
    return out


def _reshape(values: Any, rows: int, cols: int, kind: Callable[[Any], _N]) -> list[list[_N]]:
    """``values`` (flat, or one list per row) as ``rows`` lists of ``cols`` numbers of ``kind``.

    What ``np.asarray(values, dtype).reshape(rows, cols).tolist()`` gave, with its errors: a
    ragged nesting, or a number of entries that does not fit the shape.
    """
    nested = [isinstance(v, list | tuple) for v in values]
    flat: list[_N] = []
    if any(nested):
        widths = {len(v) for v in values} if all(nested) else set()
        if len(widths) != 1 or any(isinstance(x, list | tuple) for v in values for x in v):
            raise ValueError("the weights have an inhomogeneous shape")
        for v in values:
            flat.extend(kind(x) for x in v)
    else:
        flat = [kind(v) for v in values]
    if len(flat) != rows * cols:
        raise ValueError(f"cannot reshape array of size {len(flat)} into shape ({rows},{cols})")
    return [flat[r * cols : (r + 1) * cols] for r in range(rows)]


# --- compiling the weights ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ModelSpec:
    """The weights as plain Python numbers (index 0: the strong model, 1: the weak one)."""

    n: int  # numeric features; the linear part sees 2n: x, then x * x[mc]
    mc: int  # the interaction feature (multiple_choice)
    weights: tuple[list[float], list[float]]
    bias: tuple[float, float]
    means_mc: list[float]
    means_plain: list[float]
    layout: tuple[int, ...]  # zeroed in explanations of prompts that are not multiple-choice
    depth: int
    tree_base: tuple[float, float]
    tree_model: list[int]
    tree_feature: list[list[int]]  # per tree, internal nodes in heap order
    tree_threshold: list[list[float]]
    tree_value: list[list[float]]  # per tree, all nodes' mean values in heap order
    blend: float
    cal_a: float
    cal_b: float


def _num(v: float) -> str:
    """A float literal that reads back as exactly ``v`` (``inf``/``nan`` are names bound below)."""
    return repr(float(v))


def _model_source(spec: _ModelSpec, *, explain: bool) -> str:
    """Python source of one decision (``_decide(x, ls, lw)``) with the weights as constants.

    The matrix formulation, term by term: ``z = W·(x, x·x[mc]) + b``, ``p = σ(z + lexical)``;
    the trees' leaf values summed per model, ``q = σ(base + Σ leaf)``;
    ``g = blend·(ps − pw) + (1 − blend)·(qs − qw)``; ``score = σ(a·g + b)``. With ``explain``,
    each feature's share ``ds·ts − dw·tw + (es·Ts − ew·Tw)``: ``t`` its linear terms against the
    layout's mean prompt, ``T`` its split deltas summed along each tree's path (root first, in
    tree order), ``d``/``e`` the sigmoid slopes. For ``x[mc]`` of 0 or 1 (always, for the
    multiple-choice flag) each model's terms fold into ``a·x_i + b``; other values take the
    unfolded form.
    """
    n = spec.n
    out: list[str] = ["def _decide(x, ls, lw):"]

    def emit(line: str, indent: int = 1) -> None:
        out.append("    " * indent + line)

    def x_(i: int) -> str:
        return f"x{i}"

    def xa(i: int) -> str:
        """The linear part's i-th input: x_i, or x_(i-n)·x_mc for the interaction half."""
        return x_(i) if i < n else f"(x{i - n} * m)"

    emit("(" + ", ".join(x_(i) for i in range(n)) + ",) = x")
    emit(f"m = x{spec.mc}")
    # multiple_choice is 0 or 1, so the interaction half folds into the first: Σ (w_i + w_n+i)·x_i
    for branch, fold in (("if m == 0.0:", 0.0), ("elif m == 1.0:", 1.0), ("else:", None)):
        emit(branch)
        for k, z in enumerate(("zs", "zw")):
            w = spec.weights[k]
            if fold is None:
                terms = [f"{_num(w[i])} * {xa(i)}" for i in range(2 * n) if w[i] != 0.0]
            else:
                terms = [
                    f"{_num(a)} * {x_(i)}" for i in range(n) if (a := w[i] + fold * w[i + n]) != 0.0
                ]
            emit(f"{z} = {_num(spec.bias[k])}", 2)
            for start in range(0, len(terms), 16):  # bounded expression depth for the compiler
                emit(f"{z} += " + " + ".join(terms[start : start + 16]), 2)
    emit("ps = _sigmoid(zs + ls)")
    emit("pw = _sigmoid(zw + lw)")
    emit(f"gain = {_num(spec.blend)} * (ps - pw)")

    n_trees = len(spec.tree_model)
    internal = (1 << spec.depth) - 1
    # per model, the features its trees split on: their explanation sums live in locals
    used: tuple[set[int], set[int]] = (set(), set())
    for t in range(n_trees):
        used[spec.tree_model[t]].update(spec.tree_feature[t])
    if n_trees:
        emit("vs = 0.0")
        emit("vw = 0.0")
        if explain:
            for k, prefix in enumerate(("ts", "tw")):
                for f in sorted(used[k]):
                    emit(f"{prefix}{f} = 0.0")

        def walk(t: int, node: int, path: list[int], indent: int) -> None:
            feature = spec.tree_feature[t]
            value = spec.tree_value[t]
            if node >= internal:  # a leaf
                k = spec.tree_model[t]
                emit(f"{('vs', 'vw')[k]} += {_num(value[node])}", indent)
                if explain:
                    nodes = [*path, node]
                    for parent, child in zip(nodes, nodes[1:], strict=False):
                        delta = value[child] - value[parent]
                        emit(f"{('ts', 'tw')[k]}{feature[parent]} += {_num(delta)}", indent)
                return
            # x > threshold goes right (heap child 2i + 2), as the trained trees do
            emit(f"if x{feature[node]} > {_num(spec.tree_threshold[t][node])}:", indent)
            walk(t, 2 * node + 2, [*path, node], indent + 1)
            emit("else:", indent)
            walk(t, 2 * node + 1, [*path, node], indent + 1)

        for t in range(n_trees):
            walk(t, 0, [], 1)
        emit(f"qs = _sigmoid({_num(spec.tree_base[0])} + vs)")
        emit(f"qw = _sigmoid({_num(spec.tree_base[1])} + vw)")
        emit(f"gain += {_num(1.0 - spec.blend)} * (qs - qw)")
    emit(f"score = _sigmoid({_num(spec.cal_a)} * gain + {_num(spec.cal_b)})")
    if not explain:
        emit("return score, gain")
        return "\n".join(out) + "\n"

    emit(f"ds = {_num(spec.blend)} * ps * (1.0 - ps)")
    emit(f"dw = {_num(spec.blend)} * pw * (1.0 - pw)")
    if n_trees:
        emit(f"es = {_num(1.0 - spec.blend)} * qs * (1.0 - qs)")
        emit(f"ew = {_num(1.0 - spec.blend)} * qw * (1.0 - qw)")
    w_s, w_w = spec.weights
    for branch, means, fold, zeroed in (
        # the usual cases, x·m = x or ±0.0: each model's terms folded into a·x + b
        ("if m == 1.0:", spec.means_mc, 1.0, ()),
        ("elif m == 0.0:", spec.means_plain, 0.0, spec.layout),
        ("elif m > 0.0:", spec.means_mc, None, ()),
        ("else:", spec.means_plain, None, spec.layout),
    ):
        emit(branch)
        shares: list[str] = []
        for i in range(n):
            if i in zeroed:
                # "not a multiple-choice question" explains nothing about a chat turn
                shares.append("0.0")
                continue
            j = i + n
            # the linear terms against the mean prompt, w·(xa − mean), per model
            lin = []
            for w in (w_s, w_w):
                if fold is None:
                    lin.append(
                        f"{_num(w[i])} * ({x_(i)} - {_num(means[i])})"
                        f" + {_num(w[j])} * ({xa(j)} - {_num(means[j])})"
                    )
                else:
                    a = w[i] + fold * w[j]
                    b = -(w[i] * means[i] + w[j] * means[j])
                    lin.append(f"{_num(a)} * {x_(i)} + {_num(b)}")
            share = f"ds * ({lin[0]}) - dw * ({lin[1]})"
            tree = (
                f"es * ts{i}" if i in used[0] else "0.0",
                f"ew * tw{i}" if i in used[1] else "0.0",
            )
            if tree != ("0.0", "0.0"):
                share = f"{share} + ({tree[0]} - {tree[1]})"
            emit(f"c{i} = {share}", 2)
            shares.append(f"c{i}")
        emit("return score, gain, ds, dw, [" + ", ".join(shares) + "]", 2)
    return "\n".join(out) + "\n"


def _compile_model(spec: _ModelSpec, source: str, *, explain: bool) -> object:
    """The weights as a function: score only, or score with each feature's share."""
    namespace: dict[str, Any] = {"_sigmoid": _sigmoid, "inf": math.inf, "nan": math.nan}
    code = compile(_model_source(spec, explain=explain), f"<{source} model>", "exec")
    exec(code, namespace)  # our own source: only numbers from the weights, via repr()
    return namespace["_decide"]


@lru_cache(maxsize=1)
def default_classifier() -> DifficultyClassifier:
    """The shipped classifier, loaded once per process."""
    return DifficultyClassifier.load()
