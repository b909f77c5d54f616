"""Training round trip on synthetic rows (needs scikit-learn, a training-only dependency)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from gateway.routing import evaluation as ev  # noqa: E402
from gateway.routing import training as tr  # noqa: E402
from gateway.routing.classifier import DifficultyClassifier  # noqa: E402


def rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    """Word problems with many quantities are where the weak model fails."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        k = rng.randint(0, 6)
        nums = " ".join(f"then {rng.randint(2, 99)} more apples" for _ in range(k))
        prompt = f"Tom has {rng.randint(1, 9)} apples {nums}. How many apples in total?"
        weak = rng.random() > k / 7
        row: dict[str, object] = {"prompt": prompt, "weak_correct": weak, "strong_correct": True}
        if i % 10 == 0:
            row = {
                "messages": [{"role": "user", "content": prompt}],
                "weak_score": 3.0 if not weak else 9.0,
                "strong_score": 9.0,
            }
        out.append(row)
    return out


def write(path: Path, data: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def test_train_router_round_trip(tmp_path: Path) -> None:
    data = write(tmp_path / "train.jsonl", rows(300))
    out = tmp_path / "weights.json"
    cfg = tr.TrainConfig(trees=10, min_leaf=10)
    doc = tr.train_router([data], out, config=cfg, version="test-v1", progress=False)
    assert doc["version"] == "test-v1" and doc["training"]["rows"] == 300
    clf = DifficultyClassifier.load(out)
    test = rows(200, seed=1)
    scores = [clf.score(tr._messages(r)).score for r in test]
    weak = [1.0 if r.get("weak_correct", r.get("weak_score") == 9.0) else 0.0 for r in test]
    strong = [1.0] * len(test)
    assert ev.apgr(scores, weak, strong) > 0.6
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_served_gain_matches_training(tmp_path: Path) -> None:
    examples = [tr.example_from_row(r) for r in rows(200)]
    cfg = tr.TrainConfig(trees=8, min_leaf=10, calibrate=False)
    fitted = tr.fit(examples, cfg)
    doc = tr.to_document(fitted, cfg, version="t", training={})
    clf = DifficultyClassifier(json.loads(json.dumps(doc)))
    x = tr.numeric_matrix(examples[:50])
    expected = tr._gain(fitted, x)
    for e, g in zip(examples[:50], expected, strict=True):
        assert clf.score(e.messages).gain == pytest.approx(float(g), abs=1e-5)


def test_hashed_lexical_part(tmp_path: Path) -> None:
    data = write(tmp_path / "train.jsonl", rows(120))
    out = tmp_path / "w.json"
    cfg = tr.TrainConfig(trees=0, blend=1.0, hash_bits=12, calibrate=False)
    doc = tr.train_router([data], out, config=cfg, progress=False)
    assert doc["hashed"]["bits"] == 12 and doc["hashed"]["weights"]
    clf = DifficultyClassifier.load(out)
    scored = clf.score([{"role": "user", "content": "Tom has 3 apples then 5 more apples."}])
    assert 0.0 <= scored.score <= 1.0


def test_bad_rows_name_their_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"prompt": "x", "weak_correct": true, "strong_correct": true}\n{"prompt": "y"}\n'
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        tr.load_examples([path])


def test_soft_targets_from_scores() -> None:
    e = tr.example_from_row({"prompt": "p", "weak_score": 5.5, "strong_score": 10})
    assert e.weak == pytest.approx(0.5) and e.strong == 1.0
