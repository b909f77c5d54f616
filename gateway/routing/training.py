"""Offline training of the difficulty classifier (scikit-learn, imported lazily; never served).

The model, fitted on rows that say how a weak and a strong model did on each prompt:

* two probabilities per prompt, ``P(strong answer is good)`` and ``P(weak answer is good)``, each
  estimated twice: by a logistic regression on the numeric features (plus their products with the
  multiple-choice flag, so that layout gets its own weights) and by a small gradient-boosted tree
  ensemble (depth 3) on the same numeric features;
* the router's ranking key is the expected gain of asking the strong tier,
  ``g = ½(P_lr(strong) − P_lr(weak)) + ½(P_gb(strong) − P_gb(weak))``;
* the served score is ``sigmoid(a·g + b)``, a Platt fit of out-of-fold ``g`` to "the weak answer
  was worse than the strong one", so it reads as that probability (monotone in ``g``: the
  ranking, hence APGR, is unchanged).

Rows are ``{"prompt" | "messages", "weak_correct", "strong_correct"}`` (booleans) or
``{..., "weak_score", "strong_score"}`` (judge scores, read on a 1-10 scale unless told; they
become soft targets). Optional ``"tools"`` (bool), and ``"subject"`` / ``"category"`` (the group
that grouped cross-validation keeps together) and ``"source"``.

``python -m gateway.routing.training --data-dir ../shared/data`` runs the whole dev protocol
(nested cross-validation, see ``docs/routing.md``), trains on every row and writes the shipped
weights file with the measured metrics in it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.routing import evaluation as ev
from gateway.routing.features import FEATURE_SET, NUMERIC_NAMES, extract, hashed_tokens

__all__ = [
    "Example",
    "TrainConfig",
    "cross_validate",
    "dev_protocol",
    "fit",
    "load_examples",
    "train_router",
]

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]

WEIGHTS_FORMAT = "switchboard-difficulty-classifier"
INTERACTION = "multiple_choice"


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled prompt: the conversation and how good each tier's answer was (0..1)."""

    messages: tuple[Mapping[str, Any], ...]
    weak: float
    strong: float
    tools: bool = False
    group: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyperparameters. The defaults are the shipped model's (see ``docs/routing.md``)."""

    C: float = 0.003  # inverse L2 strength of the logistic regressions (standardized features)
    trees: int = 60
    learning_rate: float = 0.08
    depth: int = 3
    min_leaf: int = 100
    l2: float = 1.0
    blend: float = 0.5  # weight of the linear part in g; the trees get 1 - blend
    hash_bits: int = 0  # > 0 adds hashed word/char n-grams to the linear part (own traffic)
    hash_C: float = 0.03
    calibrate: bool = True
    seed: int = 0


# --- reading rows -----------------------------------------------------------------------------


def _messages(row: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    if isinstance(row.get("messages"), list):
        return tuple(m for m in row["messages"] if isinstance(m, Mapping))
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return ({"role": "user", "content": prompt},)
    raise ValueError('a row needs "prompt" (string) or "messages" (list)')


def example_from_row(
    row: Mapping[str, Any], *, score_range: tuple[float, float] = (1.0, 10.0), source: str = ""
) -> Example:
    """An ``Example`` from one JSON row (correctness booleans or judge scores)."""
    if "weak_correct" in row and "strong_correct" in row:
        weak = 1.0 if row["weak_correct"] else 0.0
        strong = 1.0 if row["strong_correct"] else 0.0
    elif "weak_score" in row and "strong_score" in row:
        lo, hi = score_range
        weak = min(1.0, max(0.0, (float(row["weak_score"]) - lo) / (hi - lo)))
        strong = min(1.0, max(0.0, (float(row["strong_score"]) - lo) / (hi - lo)))
    else:
        raise ValueError(
            'a row needs "weak_correct" and "strong_correct", or "weak_score" and "strong_score"'
        )
    group = row.get("subject", row.get("category"))
    return Example(
        messages=_messages(row),
        weak=weak,
        strong=strong,
        tools=bool(row.get("tools", False)),
        group=str(group) if group is not None else None,
        source=str(row.get("source", source)),
    )


def load_examples(
    paths: Iterable[str | Path], *, score_range: tuple[float, float] = (1.0, 10.0)
) -> list[Example]:
    """Rows of JSONL files as examples (blank lines skipped; a bad row raises with its place)."""
    out: list[Example] = []
    for path in paths:
        p = Path(path)
        stem = p.name.split(".")[0]
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append(
                        example_from_row(json.loads(line), score_range=score_range, source=stem)
                    )
                except (ValueError, TypeError, KeyError) as exc:
                    raise ValueError(f"{p}:{lineno}: {exc}") from exc
    return out


# --- design matrices --------------------------------------------------------------------------

_MC = NUMERIC_NAMES.index(INTERACTION)


def numeric_matrix(examples: Sequence[Example]) -> FloatArray:
    """The numeric features of every example, one row each."""
    return np.array([extract(e.messages, e.tools).numeric for e in examples], dtype=np.float64)


def augment(x: FloatArray) -> FloatArray:
    """``[x, x · multiple_choice]``: shared weights plus multiple-choice-specific ones."""
    return np.hstack([x, x * x[:, _MC : _MC + 1]])


def _hashed_matrix(examples: Sequence[Example], bits: int) -> Any:
    """Log-scaled counts of hashed tokens, a sparse (rows, 2**bits) matrix."""
    sparse = importlib.import_module("scipy.sparse")
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for e in examples:
        buckets: dict[int, int] = {}
        for b in hashed_tokens(extract(e.messages, e.tools).tokens, bits):
            buckets[b] = buckets.get(b, 0) + 1
        indices.extend(buckets)
        data.extend(math.log1p(c) for c in buckets.values())
        indptr.append(len(indices))
    return sparse.csr_matrix((data, indices, indptr), shape=(len(examples), 1 << bits))


def _soft(
    x: Any, p: FloatArray, w: FloatArray | None = None
) -> tuple[Any, npt.NDArray[np.int64], FloatArray]:
    """Soft targets as weighted duplicates: (x, 1, p) and (x, 0, 1 - p); hard rows stay single."""
    w = np.ones(len(p)) if w is None else w
    hard = (p == 0.0) | (p == 1.0)
    if hard.all():
        return x, p.astype(np.int64), w
    soft = np.flatnonzero(~hard)
    idx = np.concatenate([np.arange(len(p)), soft])
    y = np.concatenate([(p >= 0.5).astype(np.int64), np.zeros(len(soft), np.int64)])
    y[soft] = 1
    sw = np.concatenate([w, w[soft] * (1.0 - p[soft])])
    sw[soft] = w[soft] * p[soft]
    return x[idx], y, sw


# --- fitting ----------------------------------------------------------------------------------


@dataclass
class _Fitted:
    """A fitted model in serving form (numpy), before it is written as JSON."""

    lin_w: FloatArray  # (2, 2 * n_numeric): strong, weak; standardization folded in
    lin_b: FloatArray  # (2,)
    means: FloatArray  # (2 * n_numeric,) training means of the augmented features
    means_mc: FloatArray | None = None  # the same over multiple-choice prompts
    means_plain: FloatArray | None = None  # and over the others
    hashed: dict[int, tuple[float, float]] = field(default_factory=dict)
    hash_bits: int = 0
    tree_base: FloatArray = field(default_factory=lambda: np.zeros(2))
    tree_model: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    tree_feature: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 7), np.int64))
    tree_threshold: FloatArray = field(default_factory=lambda: np.zeros((0, 7)))
    tree_value: FloatArray = field(default_factory=lambda: np.zeros((0, 15)))
    depth: int = 3
    blend: float = 0.5
    calibration: tuple[float, float] = (1.0, 0.0)


def _complete_tree(nodes: Any, depth: int) -> tuple[list[int], list[float], list[float]]:
    """A sklearn HistGB tree as a complete binary tree of ``depth`` levels (heap order).

    Leaves above the bottom are padded with pass-through splits (threshold +inf: always left).
    Node values are count-weighted means of the leaves below (for per-feature attributions).
    """
    n_internal = (1 << depth) - 1
    feature = [0] * n_internal
    threshold = [math.inf] * n_internal
    value = [0.0] * (2 * n_internal + 1)

    def mean(i: int) -> tuple[float, float]:
        node = nodes[i]
        if node["is_leaf"]:
            return float(node["value"]) * float(node["count"]), float(node["count"])
        a = mean(int(node["left"]))
        b = mean(int(node["right"]))
        return a[0] + b[0], a[1] + b[1]

    def fill(slot: int, i: int) -> None:
        node = nodes[i]
        total, count = mean(i)
        value[slot] = total / count if count else 0.0
        if slot >= n_internal:
            if not node["is_leaf"]:
                raise ValueError("tree deeper than the configured depth")
            return
        if node["is_leaf"]:
            fill(2 * slot + 1, i)
            fill(2 * slot + 2, i)
            return
        feature[slot] = int(node["feature_idx"])
        threshold[slot] = float(node["num_threshold"])
        fill(2 * slot + 1, int(node["left"]))
        fill(2 * slot + 2, int(node["right"]))

    fill(0, 0)
    return feature, threshold, value


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-z))
    return out


def _tree_raw(f: _Fitted, x: FloatArray) -> FloatArray:
    """Raw tree-ensemble scores (n, 2) of numeric rows ``x``."""
    n_trees = f.tree_feature.shape[0]
    out = np.tile(f.tree_base, (x.shape[0], 1))
    if not n_trees:
        return out
    rows = np.arange(x.shape[0])[:, None]
    trees = np.arange(n_trees)[None, :]
    node = np.zeros((x.shape[0], n_trees), np.int64)
    for _ in range(f.depth):
        feat = f.tree_feature[trees, node]
        go_right = x[rows, feat] > f.tree_threshold[trees, node]
        node = 2 * node + 1 + go_right
    leaf = f.tree_value[trees, node]
    for m in (0, 1):
        out[:, m] += leaf[:, f.tree_model == m].sum(axis=1)
    return out


def _gain(f: _Fitted, x: FloatArray, hashed: Any = None) -> FloatArray:
    """The expected gain g of every numeric row (hashed part as a sparse matrix, if any)."""
    z = augment(x) @ f.lin_w.T + f.lin_b
    if hashed is not None and f.hashed:
        hw = np.zeros((1 << f.hash_bits, 2))
        for b, (ws, ww) in f.hashed.items():
            hw[b] = (ws, ww)
        z = z + hashed @ hw
    p_lin = _sigmoid(z)
    p_tree = _sigmoid(_tree_raw(f, x))
    g: FloatArray = f.blend * (p_lin[:, 0] - p_lin[:, 1]) + (1.0 - f.blend) * (
        p_tree[:, 0] - p_tree[:, 1]
    )
    return g


def _fit_core(
    x: FloatArray,
    weak: FloatArray,
    strong: FloatArray,
    config: TrainConfig,
    hashed: Any = None,
    sample_weight: FloatArray | None = None,
) -> _Fitted:
    lm: Any = importlib.import_module("sklearn.linear_model")
    ens: Any = importlib.import_module("sklearn.ensemble")
    xa = augment(x)
    mean = xa.mean(axis=0)
    std = xa.std(axis=0)
    constant = std < 1e-9  # (up to rounding): no information, and 1/std would explode
    std[constant] = 1.0
    z = (xa - mean) / std
    z[:, constant] = 0.0
    if hashed is not None:
        sparse = importlib.import_module("scipy.sparse")
        scale = math.sqrt(config.hash_C / config.C)  # a weaker prior on the lexical columns
        design: Any = sparse.hstack([sparse.csr_matrix(z), hashed * scale]).tocsr()
    else:
        scale = 1.0
        design = z
    lin_w = np.zeros((2, xa.shape[1]))
    lin_b = np.zeros(2)
    hashed_w: dict[int, tuple[float, float]] = {}
    lexical: list[FloatArray] = []
    for m, target in enumerate((strong, weak)):
        xs, ys, ws = _soft(design, target, sample_weight)
        model = lm.LogisticRegression(C=config.C, max_iter=5000)
        model.fit(xs, ys, sample_weight=ws)
        coef = np.asarray(model.coef_[0], dtype=np.float64)
        lin_w[m] = coef[: xa.shape[1]] / std
        lin_b[m] = float(model.intercept_[0]) - float(np.sum(coef[: xa.shape[1]] * mean / std))
        lexical.append(coef[xa.shape[1] :] * scale)
    if hashed is not None:
        hw = np.vstack(lexical)
        nz = np.flatnonzero(np.abs(hw).max(axis=0) > 1e-4)
        hashed_w = {int(b): (float(hw[0, b]), float(hw[1, b])) for b in nz}

    fitted = _Fitted(
        lin_w=lin_w,
        lin_b=lin_b,
        means=mean,
        means_mc=xa[x[:, _MC] > 0].mean(axis=0) if (x[:, _MC] > 0).any() else mean,
        means_plain=xa[x[:, _MC] <= 0].mean(axis=0) if (x[:, _MC] <= 0).any() else mean,
        hashed=hashed_w,
        hash_bits=config.hash_bits if hashed is not None else 0,
        depth=config.depth,
        blend=config.blend,
    )
    if config.blend >= 1.0 or config.trees <= 0:
        fitted.blend = 1.0
        return fitted
    feats: list[list[int]] = []
    thrs: list[list[float]] = []
    vals: list[list[float]] = []
    model_of: list[int] = []
    base = np.zeros(2)
    for m, target in enumerate((strong, weak)):
        xs, ys, ws = _soft(x, target, sample_weight)
        gb = ens.HistGradientBoostingClassifier(
            max_iter=config.trees,
            learning_rate=config.learning_rate,
            max_depth=config.depth,
            min_samples_leaf=config.min_leaf,
            l2_regularization=config.l2,
            early_stopping=False,
            random_state=config.seed,
        )
        gb.fit(xs, ys, sample_weight=ws)
        base[m] = float(np.ravel(gb._baseline_prediction)[0])
        for (predictor,) in gb._predictors:
            f_, t_, v_ = _complete_tree(predictor.nodes, config.depth)
            feats.append(f_)
            thrs.append(t_)
            vals.append(v_)
            model_of.append(m)
        # the exported trees must reproduce sklearn's raw scores
        probe = x[: min(len(x), 256)]
        fitted.tree_base = base.copy()
        fitted.tree_feature = np.array(feats, np.int64)
        fitted.tree_threshold = np.array(thrs)
        fitted.tree_value = np.array(vals)
        fitted.tree_model = np.array(model_of, np.int64)
        ours = _tree_raw(fitted, probe)[:, m]
        theirs = np.asarray(gb.decision_function(probe), dtype=np.float64)
        if not np.allclose(ours, theirs, atol=1e-6):
            raise RuntimeError("exported trees do not reproduce scikit-learn's predictions")
    return fitted


def _platt(g: FloatArray, weak: FloatArray, strong: FloatArray) -> tuple[float, float]:
    """Fit ``sigmoid(a·g + b)`` to P(weak answer worse than strong) (soft where scores)."""
    lm: Any = importlib.import_module("sklearn.linear_model")
    p = np.clip(strong - weak, 0.0, 1.0)
    xs, ys, ws = _soft(g[:, None], p)
    model = lm.LogisticRegression(C=100.0, max_iter=1000).fit(xs, ys, sample_weight=ws)
    return float(model.coef_[0][0]), float(model.intercept_[0])


def _arrays(examples: Sequence[Example]) -> tuple[FloatArray, FloatArray]:
    return (
        np.array([e.weak for e in examples], dtype=np.float64),
        np.array([e.strong for e in examples], dtype=np.float64),
    )


def fit(
    examples: Sequence[Example],
    config: TrainConfig = TrainConfig(),
    *,
    progress: Progress | None = None,
    x: FloatArray | None = None,
) -> _Fitted:
    """Fit the model on examples (``x``: their numeric matrix, if already computed)."""
    if len(examples) < 20:
        raise ValueError("need at least 20 labelled rows to train")
    weak, strong = _arrays(examples)
    if x is None:
        x = _featurize(examples, progress)
    hashed = _hashed_matrix(examples, config.hash_bits) if config.hash_bits else None
    if progress:
        progress("fit", 0, 1)
    fitted = _fit_core(x, weak, strong, config, hashed)
    if config.calibrate:
        k = min(5, len(examples))
        g = np.zeros(len(examples))
        for i, (train, test) in enumerate(ev.kfold(len(examples), k, seed=config.seed)):
            if progress:
                progress("calibrate", i, k)
            tr = np.array(train)
            te = np.array(test)
            h_tr = hashed[tr] if hashed is not None else None
            h_te = hashed[te] if hashed is not None else None
            inner = _fit_core(x[tr], weak[tr], strong[tr], config, h_tr)
            g[te] = _gain(inner, x[te], h_te)
        if progress:
            progress("calibrate", k, k)
        fitted.calibration = _platt(g, weak, strong)
    if progress:
        progress("fit", 1, 1)
    return fitted


def _featurize(examples: Sequence[Example], progress: Progress | None) -> FloatArray:
    rows = []
    n = len(examples)
    step = max(1, n // 50)
    for i, e in enumerate(examples):
        rows.append(extract(e.messages, e.tools).numeric)
        if progress and i % step == 0:
            progress("features", i, n)
    if progress:
        progress("features", n, n)
    return np.array(rows, dtype=np.float64)


# --- the weights document ---------------------------------------------------------------------


def _r(a: Any, digits: int = 6) -> Any:
    if isinstance(a, np.ndarray):
        return _r(a.tolist(), digits)
    if isinstance(a, list | tuple):
        return [_r(v, digits) for v in a]
    if isinstance(a, float):
        if math.isinf(a):
            return 1e300
        return float(f"{a:.{digits}g}")
    return a


def to_document(
    fitted: _Fitted,
    config: TrainConfig,
    *,
    version: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON weights document the classifier loads."""
    return {
        "format": WEIGHTS_FORMAT,
        "version": version,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "feature_set": FEATURE_SET,
        "numeric_names": list(NUMERIC_NAMES),
        "interaction": INTERACTION,
        "linear": {
            "bias": _r(fitted.lin_b),
            "weights": _r(fitted.lin_w),
            "means": _r(fitted.means),
            "means_mc": _r(fitted.means_mc if fitted.means_mc is not None else fitted.means),
            "means_plain": _r(
                fitted.means_plain if fitted.means_plain is not None else fitted.means
            ),
        },
        "hashed": (
            {
                "bits": fitted.hash_bits,
                "weights": {str(b): _r(list(w)) for b, w in sorted(fitted.hashed.items())},
            }
            if fitted.hash_bits
            else None
        ),
        "trees": {
            "depth": fitted.depth,
            "base": _r(fitted.tree_base),
            "model": fitted.tree_model.tolist(),
            "feature": fitted.tree_feature.tolist(),
            "threshold": _r(fitted.tree_threshold, 17),
            "value": _r(fitted.tree_value),
        },
        "blend": fitted.blend,
        "calibration": {"a": _r(fitted.calibration[0]), "b": _r(fitted.calibration[1])},
        "config": asdict(config),
        "training": dict(training),
        "metrics": dict(metrics or {}),
    }


def describe(examples: Sequence[Example]) -> dict[str, Any]:
    sources: dict[str, int] = {}
    for e in examples:
        sources[e.source or "?"] = sources.get(e.source or "?", 0) + 1
    return {"rows": len(examples), "sources": sources}


def _stderr_progress(stage: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r{stage:>10} [{bar}] {done}/{total}{end}")
    sys.stderr.flush()


def train_router(
    data: Sequence[str | Path],
    out: str | Path,
    *,
    config: TrainConfig = TrainConfig(),
    version: str | None = None,
    progress: bool = True,
    score_range: tuple[float, float] = (1.0, 10.0),
    metrics: Mapping[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Train on JSONL files and write the weights JSON to ``out`` (`gateway train-router`).

    Returns the written document. ``progress`` draws a bar on stderr.
    """
    examples = load_examples(data, score_range=score_range)
    fitted = fit(examples, config, progress=_stderr_progress if progress else None)
    training = {
        **describe(examples),
        "files": [Path(p).name for p in data],
        "description": description,
        "target": "P(strong good) and P(weak good); score = P(weak answer worse), Platt-fitted",
    }
    doc = to_document(
        fitted,
        config,
        version=version or f"router-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}",
        training=training,
        metrics=metrics,
    )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    return doc


# --- cross-validation -------------------------------------------------------------------------


def cross_validate(
    examples: Sequence[Example],
    splits: Sequence[tuple[Sequence[int], Sequence[int]]],
    config: TrainConfig = TrainConfig(),
    *,
    extra: Sequence[Example] = (),
    x: FloatArray | None = None,
    x_extra: FloatArray | None = None,
    grid: Sequence[TrainConfig] = (),
    inner_splits: Callable[[Sequence[int]], Sequence[tuple[Sequence[int], Sequence[int]]]]
    | None = None,
    progress: Progress | None = None,
) -> tuple[list[float], list[TrainConfig]]:
    """Out-of-fold expected gains of ``examples`` (the ranking key; calibration skipped).

    Each split trains on its train rows plus ``extra`` (always-training rows, e.g. another data
    set) and predicts its test rows. With ``grid`` and ``inner_splits``, each outer fold picks its
    configuration by the mean APGR of an inner cross-validation on its own training rows
    (nested: the outer test rows never influence the choice). Returns the scores and the
    configuration each fold used.
    """
    x = _featurize(examples, None) if x is None else x
    weak, strong = _arrays(examples)
    if extra:
        xe = _featurize(extra, None) if x_extra is None else x_extra
        we, se = _arrays(extra)
    else:
        xe = np.zeros((0, x.shape[1]))
        we = se = np.zeros(0)
    out = np.full(len(examples), np.nan)
    chosen: list[TrainConfig] = []
    for k, (train, test) in enumerate(splits):
        if progress:
            progress("cv", k, len(splits))
        tr = np.asarray(train, dtype=np.int64)
        te = np.asarray(test, dtype=np.int64)
        best = replace(config, calibrate=False)
        if grid and inner_splits is not None:
            best = _select(x, weak, strong, xe, we, se, tr, grid, inner_splits)
        chosen.append(best)
        fitted = _fit_core(
            np.vstack([x[tr], xe]),
            np.concatenate([weak[tr], we]),
            np.concatenate([strong[tr], se]),
            best,
        )
        out[te] = _gain(fitted, x[te])
    if progress:
        progress("cv", len(splits), len(splits))
    return [float(v) for v in out], chosen


def _select(
    x: FloatArray,
    weak: FloatArray,
    strong: FloatArray,
    xe: FloatArray,
    we: FloatArray,
    se: FloatArray,
    tr: npt.NDArray[np.int64],
    grid: Sequence[TrainConfig],
    inner_splits: Callable[[Sequence[int]], Sequence[tuple[Sequence[int], Sequence[int]]]],
) -> TrainConfig:
    """The grid entry with the best mean inner-fold APGR on the rows ``tr`` only."""
    scores = np.zeros(len(grid))
    for inner_train, inner_test in inner_splits([int(i) for i in tr]):
        itr = np.asarray(inner_train, dtype=np.int64)
        ite = np.asarray(inner_test, dtype=np.int64)
        for j, cfg in enumerate(grid):
            fitted = _fit_core(
                np.vstack([x[itr], xe]),
                np.concatenate([weak[itr], we]),
                np.concatenate([strong[itr], se]),
                replace(cfg, calibrate=False),
            )
            g = _gain(fitted, x[ite])
            scores[j] += ev.apgr(list(g), list(weak[ite]), list(strong[ite]))
    return replace(grid[int(np.argmax(scores))], calibrate=False)


# --- the dev protocol -------------------------------------------------------------------------

DEV_GRID: tuple[TrainConfig, ...] = tuple(
    TrainConfig(C=c, min_leaf=leaf) for c in (0.001, 0.003, 0.01) for leaf in (50, 100)
)


def _report(
    name: str, scores: Sequence[float], weak: FloatArray, strong: FloatArray
) -> dict[str, Any]:
    return ev.evaluate_scores(name, scores, list(weak), list(strong)).as_dict()


def _baselines(examples: Sequence[Example]) -> list[dict[str, Any]]:
    weak, strong = _arrays(examples)
    prompts = ["\n".join(str(m.get("content", "")) for m in e.messages) for e in examples]
    return [
        _report("random", [0.0] * len(examples), weak, strong),
        _report("prompt length", ev.length_scores(prompts), weak, strong),
        _report("oracle", ev.oracle_scores(list(weak), list(strong)), weak, strong),
    ]


def dev_protocol(
    data_dir: str | Path,
    *,
    folds: int = 5,
    inner_folds: int = 3,
    seeds: Sequence[int] = (0, 1, 2),
    grid: Sequence[TrainConfig] = DEV_GRID,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The evaluation in ``docs/routing.md``: nested CV on GSM8K and MMLU, MT-Bench held out.

    * GSM8K: shuffled ``folds``-fold CV (seeds ``seeds``; the first one is the headline), all of
      MMLU always in training.
    * MMLU: ``folds`` folds grouped by subject (each test fold holds only subjects its training
      never saw), all of GSM8K always in training.
    * Every outer fold chooses C and the trees' leaf size from ``grid`` by an inner CV of the same
      kind on its own training rows.
    * MT-Bench (65 rows): never trained on; scored by a model fitted on all GSM8K and MMLU rows
      with the default configuration, APGR with a 95% bootstrap interval.
    """
    root = Path(data_dir) / "routing"
    gsm = load_examples([root / "gsm8k.dev.jsonl"])
    mmlu = load_examples([root / "mmlu.dev.jsonl"])
    mt = load_examples([root / "mt_bench.dev.jsonl"])
    t0 = time.perf_counter()
    x_gsm = _featurize(gsm, None)
    x_mmlu = _featurize(mmlu, None)
    x_mt = _featurize(mt, None)
    report: dict[str, Any] = {"protocol": dev_protocol.__doc__, "sets": {}}

    def gsm_inner(seed: int) -> Callable[[Sequence[int]], list[tuple[list[int], list[int]]]]:
        def inner(rows: Sequence[int]) -> list[tuple[list[int], list[int]]]:
            return [
                ([rows[i] for i in a], [rows[i] for i in b])
                for a, b in ev.kfold(len(rows), inner_folds, seed=seed + 100)
            ]

        return inner

    def mmlu_inner(rows: Sequence[int]) -> list[tuple[list[int], list[int]]]:
        groups = [mmlu[i].group for i in rows]
        return [
            ([rows[i] for i in a], [rows[i] for i in b])
            for a, b in ev.group_kfold(groups, inner_folds)
        ]

    # GSM8K
    runs = []
    for seed in seeds:
        scores, chosen = cross_validate(
            gsm,
            ev.kfold(len(gsm), folds, seed=seed),
            extra=mmlu,
            x=x_gsm,
            x_extra=x_mmlu,
            grid=grid,
            inner_splits=gsm_inner(seed),
            progress=progress,
        )
        weak, strong = _arrays(gsm)
        runs.append(
            {
                "seed": seed,
                **_report("router", scores, weak, strong),
                "chosen": [{"C": c.C, "min_leaf": c.min_leaf} for c in chosen],
            }
        )
    report["sets"]["gsm8k"] = {
        "rows": len(gsm),
        "protocol": f"{folds}-fold shuffled CV (seeds {list(seeds)}), MMLU always in training, "
        f"nested {inner_folds}-fold selection",
        "router": runs[0],
        "router_seeds": runs,
        "router_mean_apgr": round(float(np.mean([r["apgr"] for r in runs])), 4),
        "baselines": _baselines(gsm),
    }

    # MMLU grouped by subject
    splits = ev.group_kfold([e.group for e in mmlu], folds)
    scores, chosen = cross_validate(
        mmlu,
        splits,
        extra=gsm,
        x=x_mmlu,
        x_extra=x_gsm,
        grid=grid,
        inner_splits=mmlu_inner,
        progress=progress,
    )
    weak, strong = _arrays(mmlu)
    per_fold = []
    for _, test in splits:
        w = weak[test]
        s = strong[test]
        lengths = ev.length_scores([str(mmlu[i].messages[-1].get("content", "")) for i in test])
        per_fold.append(
            {
                "subjects": sorted({str(mmlu[i].group) for i in test}),
                "rows": len(test),
                "apgr": round(ev.apgr([scores[i] for i in test], list(w), list(s)), 4),
                "length_apgr": round(ev.apgr(lengths, list(w), list(s)), 4),
            }
        )
    report["sets"]["mmlu"] = {
        "rows": len(mmlu),
        "protocol": f"{folds} folds grouped by subject (unseen subjects), GSM8K always in "
        f"training, nested {inner_folds}-fold grouped selection",
        "router": {
            **_report("router", scores, weak, strong),
            "chosen": [{"C": c.C, "min_leaf": c.min_leaf} for c in chosen],
        },
        "per_fold": per_fold,
        "per_fold_mean_apgr": round(float(np.mean([f["apgr"] for f in per_fold])), 4),
        "baselines": _baselines(mmlu),
    }

    # MT-Bench: fully held out
    fitted = _fit_core(
        np.vstack([x_gsm, x_mmlu]),
        np.concatenate([_arrays(gsm)[0], _arrays(mmlu)[0]]),
        np.concatenate([_arrays(gsm)[1], _arrays(mmlu)[1]]),
        replace(TrainConfig(), calibrate=False),
    )
    g = _gain(fitted, x_mt)
    weak, strong = _arrays(mt)
    point, low, high = ev.bootstrap_apgr(list(g), list(weak), list(strong), rounds=2000)
    report["sets"]["mt_bench"] = {
        "rows": len(mt),
        "protocol": "never trained on; model fitted on all GSM8K + MMLU rows; 2000 bootstrap "
        "resamples",
        "router": {
            **_report("router", list(g), weak, strong),
            "apgr_95ci": [round(low, 4), round(high, 4)],
        },
        "baselines": _baselines(mt),
    }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.routing.training",
        description="Evaluate the dev protocol and/or train the shipped difficulty classifier.",
    )
    parser.add_argument("--data-dir", default="../shared/data", help="folder with routing/*.jsonl")
    parser.add_argument("--out", default=None, help="write trained weights here")
    parser.add_argument("--report", default=None, help="write the evaluation report (JSON) here")
    parser.add_argument("--version", default="router-v1")
    parser.add_argument("--skip-eval", action="store_true", help="train without the CV protocol")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--metrics-from", default=None, help="with --skip-eval: a saved --report to embed"
    )
    args = parser.parse_args(argv)
    metrics: dict[str, Any] = {}
    report: dict[str, Any] | None = None
    if not args.skip_eval:
        report = dev_protocol(
            args.data_dir,
            seeds=[int(s) for s in args.seeds.split(",")],
            progress=_stderr_progress,
        )
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    elif args.metrics_from:
        report = json.loads(Path(args.metrics_from).read_text())
    if report is not None:
        metrics = {
            name: {
                "protocol": body["protocol"],
                "router": {k: v for k, v in body["router"].items() if k != "chosen"},
                **{
                    k: body[k]
                    for k in ("router_mean_apgr", "router_seeds", "per_fold", "per_fold_mean_apgr")
                    if k in body
                },
                "baselines": body["baselines"],
            }
            for name, body in report["sets"].items()
        }
        print(json.dumps(metrics, indent=2))  # noqa: T201
    if args.out:
        root = Path(args.data_dir) / "routing"
        files = [root / "gsm8k.dev.jsonl", root / "mmlu.dev.jsonl"]
        doc = train_router(
            files,
            args.out,
            version=args.version,
            metrics=metrics,
            description="RouteLLM dev sets (lm-sys/RouteLLM, Apache-2.0): GSM8K and 43 MMLU "
            "subjects; labels: Mixtral-8x7B (weak) vs GPT-4-1106 (strong) correctness. "
            "MT-Bench kept out of training for evaluation.",
        )
        print(f"wrote {args.out} ({doc['version']})", file=sys.stderr)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
