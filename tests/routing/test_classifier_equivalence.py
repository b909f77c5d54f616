"""The shipped classifier's scores and explanations stay what they were.

``fixtures/classifier_equivalence.json`` holds ~45 hand-written conversations (English, Chinese,
mixed, multiple-choice, maths, code, long, empty, malformed, images, tools, 200 turns) with the
score, gain and top-3 features the original implementation gave them. A speed-up (or any other
refactoring) of ``features.py`` / ``classifier.py`` must reproduce them; a change that is meant to
alter scores needs a new feature set or weights version, and a re-recorded fixture.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.routing.classifier import LAYOUT_FEATURES, DifficultyClassifier, Scored
from gateway.routing.features import _ROMAN, NUMERIC_NAMES, extract

FIXTURE = Path(__file__).parent / "fixtures" / "classifier_equivalence.json"
CASES: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def clf() -> DifficultyClassifier:
    return DifficultyClassifier.load()


def test_fixture_covers_the_edge_cases() -> None:
    names = {case["name"] for case in CASES}
    assert len(names) == len(CASES) >= 40
    for kind in ("chinese", "mixed", "mc_", "long", "empty", "image", "tools", "turns"):
        assert any(kind in name for name in names), kind


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_score_and_top_features_equal_the_recorded_ones(
    clf: DifficultyClassifier, case: dict[str, Any]
) -> None:
    scored = clf.score(case["messages"], case["tools"])
    assert scored.score == pytest.approx(case["score"], rel=0, abs=1e-9)
    assert scored.gain == pytest.approx(case["gain"], rel=0, abs=1e-9)
    assert [name for name, _ in scored.top_features] == [n for n, _ in case["top_features"]]
    for (_, value), (_, recorded) in zip(scored.top_features, case["top_features"], strict=True):
        assert round(value, 4) == pytest.approx(recorded, rel=0, abs=1e-12)


@pytest.mark.parametrize("top", [0, 1, 5])
def test_other_explanation_lengths_are_prefixes_of_the_ranking(
    clf: DifficultyClassifier, top: int
) -> None:
    for case in CASES:
        scored = clf.score(case["messages"], case["tools"], top=top)
        assert scored.score == pytest.approx(case["score"], rel=0, abs=1e-9)
        names = [name for name, _ in scored.top_features]
        recorded = [n for n, _ in case["top_features"]]
        assert len(names) <= top
        assert names[:3] == recorded[: len(names[:3])]


# --- the compiled model against the matrix formulation -------------------------------------------


def matrix_decision(doc: dict[str, Any], x: tuple[float, ...], top: int = 3) -> Scored:
    """The decision as the weights file defines it, in numpy (the pre-compilation code)."""
    n = len(NUMERIC_NAMES)
    mc = NUMERIC_NAMES.index(doc.get("interaction", "multiple_choice"))
    lin, trees = doc["linear"], doc["trees"]
    w, b = np.asarray(lin["weights"]), np.asarray(lin["bias"])
    xv = np.asarray(x)
    xa = np.concatenate((xv, xv * xv[mc]))
    ps, pw = (sigmoid(float(v)) for v in w @ xa + b)
    blend = float(doc.get("blend", 0.5))
    depth, t = int(trees["depth"]), len(trees["model"])
    internal = (1 << depth) - 1
    feature = np.asarray(trees["feature"]).reshape(t, internal)
    threshold = np.asarray(trees["threshold"]).reshape(t, internal)
    value = np.asarray(trees["value"]).reshape(t, 2 * internal + 1)
    sums = [float(trees["base"][0]), float(trees["base"][1])]
    path = np.zeros((2, n))
    for ti in range(t):
        node, model = 0, int(trees["model"][ti])
        while node < internal:
            child = 2 * node + (2 if xv[feature[ti, node]] > threshold[ti, node] else 1)
            path[model, feature[ti, node]] += value[ti, child] - value[ti, node]
            node = child
        sums[model] += value[ti, node]
    qs, qw = sigmoid(sums[0]), sigmoid(sums[1])
    gain = blend * (ps - pw) + (1 - blend) * (qs - qw)
    cal = doc["calibration"]
    score = sigmoid(cal["a"] * gain + cal["b"])
    is_mc = xv[mc] > 0
    terms = w * (xa - np.asarray(lin["means_mc"] if is_mc else lin["means_plain"]))
    terms = terms[:, :n] + terms[:, n:]
    contrib = blend * (ps * (1 - ps) * terms[0] - pw * (1 - pw) * terms[1])
    contrib += (1 - blend) * (qs * (1 - qs) * path[0] - qw * (1 - qw) * path[1])
    if not is_mc:
        contrib[[NUMERIC_NAMES.index(f) for f in LAYOUT_FEATURES]] = 0.0
    order = np.argsort(-np.abs(contrib), kind="stable")[:top]
    return Scored(
        score,
        tuple((NUMERIC_NAMES[i], round(float(contrib[i]), 4)) for i in order if contrib[i] != 0),
        gain,
    )


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize("interaction", ["multiple_choice", "log_words", "newlines"])
def test_compiled_model_equals_the_matrix_formulation(
    clf: DifficultyClassifier, interaction: str
) -> None:
    # other interaction features take values other than 0 and 1: the unfolded branches
    doc = {**clf.document, "interaction": interaction}
    other = DifficultyClassifier(doc)
    for case in CASES:
        x = extract(case["messages"], case["tools"], with_tokens=False).numeric
        want = matrix_decision(doc, x)
        got = other.score(case["messages"], case["tools"])
        assert got.score == pytest.approx(want.score, rel=0, abs=1e-12), case["name"]
        assert got.gain == pytest.approx(want.gain, rel=0, abs=1e-12), case["name"]
        assert got.top_features == want.top_features, case["name"]


def test_roman_numeral_pattern_matches_its_word_boundary_form() -> None:
    # features._ROMAN is written to start with a literal "I" (fast search); same matches as this
    plain = re.compile(r"\b(?:I|II|III|IV)\b(?:\s*(?:,|and|only)\s*(?:I|II|III|IV)\b)+")
    rng = random.Random(0)
    pieces = ["I", "V", "II", " ", ",", "and", "only", "a", "\n", "X", "_", "é", "1", "(", "Ia"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        assert bool(_ROMAN.search(text)) == bool(plain.search(text)), text
