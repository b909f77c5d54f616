"""The difficulty classifier: shipped weights, features, bad input, and the routing metrics."""

from __future__ import annotations

import io
import json
import math
import random
import zlib
from pathlib import Path

import pytest

from gateway.routing import evaluation as ev
from gateway.routing.classifier import LEXICAL, DifficultyClassifier, Scored, default_classifier
from gateway.routing.features import FEATURE_SET, NUMERIC_NAMES, extract, hashed_tokens

WORD_PROBLEM = (
    "Three years ago, Maria was twice as old as her brother Leo. In five years, the sum of their "
    "ages will be 50. Their cousin Ana is 4 years younger than Maria. How old will Ana be when "
    "Leo turns 30?"
)
WORD_PROBLEM_ZH = (
    "三年前，玛丽亚的年龄是她弟弟的两倍。五年后，他们的年龄之和将是50岁。表妹比玛丽亚小4岁。"
    "当弟弟30岁时，表妹多大？"
)
CHAT = "Hi, where can I change the email on my account?"


def user(text: object) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def clf() -> DifficultyClassifier:
    return DifficultyClassifier.load()


def check(scored: Scored) -> None:
    assert isinstance(scored.score, float)
    assert 0.0 <= scored.score <= 1.0
    assert math.isfinite(scored.gain)
    assert len(scored.top_features) <= 3
    names = set(NUMERIC_NAMES) | {LEXICAL}
    for name, value in scored.top_features:
        assert name in names
        assert math.isfinite(value)


# --- the shipped weights ----------------------------------------------------------------------


def test_shipped_weights_load_and_have_a_version(clf: DifficultyClassifier) -> None:
    assert clf.version == "router-v1"
    doc = clf.document
    assert doc["feature_set"] == FEATURE_SET
    assert doc["numeric_names"] == list(NUMERIC_NAMES)
    assert doc["training"]["rows"] > 1000
    assert "gsm8k" in doc["metrics"] and "mmlu" in doc["metrics"]
    assert default_classifier() is default_classifier()


def test_weights_file_is_small() -> None:
    path = Path(__file__).parents[2] / "gateway" / "routing" / "weights" / "router-v1.json"
    assert path.stat().st_size < 200_000


def test_load_from_path_equals_default(clf: DifficultyClassifier, tmp_path: Path) -> None:
    doc = dict(clf.document)
    path = tmp_path / "w.json"
    path.write_text(json.dumps(doc))
    other = DifficultyClassifier.load(path)
    assert other.score(user(WORD_PROBLEM)) == clf.score(user(WORD_PROBLEM))


def test_mismatched_feature_set_is_refused(clf: DifficultyClassifier) -> None:
    doc = {**clf.document, "feature_set": "sb-features-0"}
    with pytest.raises(ValueError, match="feature set"):
        DifficultyClassifier(doc)
    with pytest.raises(ValueError, match="not a difficulty-classifier"):
        DifficultyClassifier({"format": "something else"})


# --- scoring ----------------------------------------------------------------------------------


def test_score_in_unit_interval_and_deterministic(clf: DifficultyClassifier) -> None:
    for text in (WORD_PROBLEM, CHAT, "x", "?" * 50):
        first = clf.score(user(text))
        check(first)
        assert clf.score(user(text)) == first
        assert DifficultyClassifier.load().score(user(text)) == first


def test_a_word_problem_outranks_a_support_question(clf: DifficultyClassifier) -> None:
    chat = clf.score(user(CHAT))
    assert clf.score(user(WORD_PROBLEM)).gain > chat.gain
    assert clf.score(user(WORD_PROBLEM_ZH)).gain > chat.gain
    assert clf.score(user(WORD_PROBLEM)).score > chat.score


def test_top_features_explain(clf: DifficultyClassifier) -> None:
    scored = clf.score(user(WORD_PROBLEM))
    assert scored.top_features
    values = [abs(v) for _, v in scored.top_features]
    assert values == sorted(values, reverse=True)
    assert clf.score(user(WORD_PROBLEM), top=0).top_features == ()
    assert clf.score(user(WORD_PROBLEM), top=0).score == scored.score


def test_chinese_and_mixed_language(clf: DifficultyClassifier) -> None:
    zh = "我买了3个苹果，每个5元，后来又买了两倍数量的梨，每个4元。一共花了多少钱？"
    mixed = "请用Python写一个函数, which returns the k-th smallest element of two sorted lists."
    for text in (zh, mixed, "你好", "退款", WORD_PROBLEM_ZH):
        check(clf.score(user(text)))
    named = extract(user(zh)).named()
    assert named["cjk_ratio"] > 0.5
    assert named["numbers"] > 0
    assert named["kw_rate"] > 0 and named["kw_total"] > 0
    assert extract(user(mixed)).named()["kw_code"] > 0


@pytest.mark.parametrize(
    "messages",
    [
        [],
        user(""),
        user("   \n\t  "),
        user(None),
        [{"role": "system", "content": "You are helpful."}],
        [{"role": "assistant", "content": "Hello!"}],
        [{"content": "no role"}],
        ["not a mapping", 42, None],
        user([{"type": "text"}, "bare string part", {"type": "text", "text": 7}]),
        user(12345),
    ],
)
def test_empty_and_malformed_messages_still_score(
    clf: DifficultyClassifier, messages: list[object]
) -> None:
    check(clf.score(messages))  # type: ignore[arg-type]


def test_image_parts(clf: DifficultyClassifier) -> None:
    messages = user(
        [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    )
    check(clf.score(messages))
    assert extract(messages).named()["images"] == 1.0
    only_image = user([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])
    check(clf.score(only_image))


def test_tools_and_tool_results(clf: DifficultyClassifier) -> None:
    messages = [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "What's the status of order 12345?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "1"},
    ]
    scored = clf.score(messages, tools=True)
    check(scored)
    named = extract(messages, tools=True).named()
    assert named["tools"] == 1.0
    assert named["log_system_chars"] > 0


def test_two_hundred_turns(clf: DifficultyClassifier) -> None:
    messages: list[dict[str, object]] = [{"role": "system", "content": "Be brief."}]
    for i in range(100):
        messages.append({"role": "user", "content": f"Question {i}: what is {i} + {i}?"})
        messages.append({"role": "assistant", "content": f"{2 * i}"})
    check(clf.score(messages))
    named = extract(messages).named()
    assert named["log_turns"] == pytest.approx(math.log1p(200))
    # the question is the last user turn
    assert extract(messages).tokens[:2] == ("question", "<num>")


def test_a_200k_token_prompt_is_read_in_bounded_time(clf: DifficultyClassifier) -> None:
    long_text = (WORD_PROBLEM + " ") * 4500  # ~800k characters, ~200k tokens
    scored = clf.score(user(long_text))
    check(scored)
    assert extract(user(long_text)).named()["log_chars"] == pytest.approx(
        math.log1p(len(long_text))
    )
    check(clf.score(user("中文" * 300_000)))


def test_multiple_choice_layout_is_read() -> None:
    mc = "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
    named = extract(user(mc)).named()
    assert named["multiple_choice"] == 1.0
    assert named["option_numeric"] == 1.0
    pairs = "Statement 1 | x. Statement 2 | y.\nA. True, True\nB. False, False\nC. True, False"
    named = extract(user(pairs)).named()
    assert named["compound_options"] == 1.0
    assert named["stem_no_question"] == 1.0


# --- features ---------------------------------------------------------------------------------


def test_feature_vector_shape_and_finiteness() -> None:
    for text in (WORD_PROBLEM, CHAT, "", "中文", "```python\ndef f(x):\n    return x\n```"):
        feats = extract(user(text))
        assert len(feats.numeric) == len(NUMERIC_NAMES)
        assert all(math.isfinite(v) for v in feats.numeric)
    code = extract(user("Fix this:\n```python\ndef f(x):\n    return x\n```")).named()
    assert code["code_lines"] > 0


def test_hashed_tokens_are_stable_crc32() -> None:
    mask = (1 << 18) - 1
    assert hashed_tokens(["hello", "你好"], 18) == [
        zlib.crc32(b"hello") & mask,
        zlib.crc32("你好".encode()) & mask,
    ]
    assert hashed_tokens(["hello"], 18) == [907060870 & mask]


# --- metrics ----------------------------------------------------------------------------------


def synthetic(n: int, seed: int = 0) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    weak = [1.0 if rng.random() < 0.6 else 0.0 for _ in range(n)]
    strong = [1.0 if (w or rng.random() < 0.6) else 0.0 for w in weak]
    return weak, strong


def test_oracle_beats_random_and_random_is_half() -> None:
    weak, strong = synthetic(20_000)
    rng = random.Random(1)
    random_scores = [rng.random() for _ in weak]
    assert ev.apgr(random_scores, weak, strong) == pytest.approx(0.5, abs=0.02)
    assert ev.random_apgr(weak, strong) == pytest.approx(0.5)
    oracle = ev.oracle_scores(weak, strong)
    assert ev.apgr(oracle, weak, strong) > 0.8
    assert ev.cpt(oracle, weak, strong, 0.5) < ev.cpt(random_scores, weak, strong, 0.5)


def test_pgr_curve_and_cpt_on_a_tiny_example() -> None:
    weak = [0.0, 1.0, 0.0, 1.0]
    strong = [1.0, 1.0, 1.0, 1.0]
    scores = [0.9, 0.1, 0.8, 0.2]  # the two gains first: a perfect router
    curve = ev.pgr_curve(scores, weak, strong)
    assert curve.shares == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert curve.pgr == (0.0, 0.5, 1.0, 1.0, 1.0)
    assert ev.apgr(scores, weak, strong) == pytest.approx(0.125 + 0.125 + 0.5)
    assert ev.cpt(scores, weak, strong, 0.5) == pytest.approx(0.25)
    assert ev.cpt(scores, weak, strong, 0.8) == pytest.approx(0.4)
    worst = [-s for s in scores]
    assert ev.apgr(worst, weak, strong) < 0.5
    # ties are the expected value over random orders: all tied is the diagonal
    assert ev.apgr([1.0] * 4, weak, strong) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ev.apgr([0.0, 0.0], [1.0, 1.0], [1.0, 1.0])


def test_judge_scores_work_like_correctness() -> None:
    weak = [9.0, 2.0, 10.0, 7.0]
    strong = [10.0, 9.0, 10.0, 10.0]
    oracle = ev.oracle_scores(weak, strong)
    report = ev.evaluate_scores("oracle", oracle, weak, strong)
    assert report.apgr > 0.5
    assert report.weak_quality == pytest.approx(7.0)
    point, low, high = ev.bootstrap_apgr(oracle, weak, strong, rounds=200)
    assert low <= point <= high


def test_kfold_and_group_kfold() -> None:
    splits = ev.kfold(103, 5, seed=3)
    tested = sorted(i for _, test in splits for i in test)
    assert tested == list(range(103))
    for train, test in splits:
        assert not set(train) & set(test)
    groups = [f"s{i % 7}" for i in range(70)] + ["big"] * 30
    gsplits = ev.group_kfold(groups, 3)
    assert sorted(i for _, test in gsplits for i in test) == list(range(100))
    for train, test in gsplits:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert ev.group_kfold(groups, 3) == gsplits


def test_cross_val_scores_puts_predictions_back_in_order() -> None:
    splits = ev.kfold(10, 2, seed=0)
    out = ev.cross_val_scores(10, splits, lambda train, test: [float(i) for i in test])
    assert out == [float(i) for i in range(10)]


# --- the commands' bodies ---------------------------------------------------------------------


def test_classify_jsonl_adds_scores(clf: DifficultyClassifier) -> None:
    rows = [
        {"id": 1, "prompt": WORD_PROBLEM},
        {"id": 2, "messages": [{"role": "user", "content": "你好"}]},
    ]
    src = io.StringIO("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    dst = io.StringIO()
    assert ev.classify_jsonl(src, dst, explain=True) == 2
    out = [json.loads(line) for line in dst.getvalue().splitlines()]
    assert [r["id"] for r in out] == [1, 2]
    assert out[0]["score"] == round(clf.score(user(WORD_PROBLEM)).score, 6)
    assert all(0.0 <= r["score"] <= 1.0 and "top_features" in r for r in out)
    with pytest.raises(ValueError, match="line 1"):
        ev.classify_jsonl(io.StringIO('{"text": "no prompt"}\n'), io.StringIO())


def test_eval_router_reports_against_baselines(tmp_path: Path) -> None:
    rng = random.Random(0)
    path = tmp_path / "tiny.jsonl"
    lines = []
    for i in range(60):
        hard = i % 3 == 0
        text = WORD_PROBLEM if hard else CHAT
        weak = not hard or rng.random() < 0.3
        lines.append(json.dumps({"prompt": text, "weak_correct": weak, "strong_correct": True}))
    path.write_text("\n".join(lines) + "\n")
    (report,) = ev.eval_router([path], bootstrap=100)
    names = [r.name for r in report.routers]
    assert names[1:] == ["random", "prompt length", "oracle"]
    router, random_router, _, oracle = report.routers
    assert random_router.apgr == pytest.approx(0.5)
    assert oracle.apgr >= router.apgr > 0.5
    assert report.apgr_interval is not None
    assert "APGR" in ev.format_reports([report])
    assert report.as_dict()["rows"] == 60


def test_serving_imports_no_scikit_learn() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gateway.routing.classifier import DifficultyClassifier\n"
        "from gateway.routing import evaluation\n"
        "DifficultyClassifier.load().score([{'role': 'user', 'content': 'hi'}])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'torch')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
