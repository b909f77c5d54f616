"""The trained matcher, its threshold, its file, and ApprovedAnswers as a stage will call it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gateway.answers.file import AnswersFileError, load_answers
from gateway.answers.matcher import ApprovedAnswers, TenantAnswers
from gateway.answers.model import IntentModel, ModelFileError
from gateway.answers.promote import promote_answer, promote_example
from gateway.answers.training import Example, TrainingError, choose_threshold, train


def test_threshold_is_the_lowest_confidence_within_the_target_error() -> None:
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True, False])
    threshold, coverage, error = choose_threshold(confidence, correct, 0.25)
    assert (threshold, coverage, error) == (0.7, 5 / 6, 0.2)
    threshold, coverage, error = choose_threshold(confidence, correct, 0.0)
    assert (threshold, coverage, error) == (0.9, 0.5, 0.0)


def test_a_tie_is_not_split_by_the_threshold() -> None:
    confidence = np.array([0.9, 0.8, 0.8])
    correct = np.array([True, True, False])
    assert choose_threshold(confidence, correct, 0.0)[0] == 0.9


def test_nothing_answered_when_the_best_is_wrong_and_no_error_is_allowed() -> None:
    threshold, coverage, _ = choose_threshold(np.array([0.9]), np.array([False]), 0.0)
    assert threshold > 1.0 and coverage == 0.0


def test_english_and_chinese_wordings_it_never_saw_are_matched(model: IntentModel) -> None:
    assert model.predict("where is my package").intent == "track_order"
    assert model.predict("我的包裹到哪里了").intent == "track_order"
    assert model.predict("退款几天能到").intent == "refund_time"
    assert model.predict("I would like to speak with a human").intent == "human_agent"


def test_it_abstains_on_what_no_intent_covers(model: IntentModel) -> None:
    prediction = model.predict("what will the weather be in Paris tomorrow")
    assert prediction.intent is None
    assert prediction.confidence < model.threshold


def test_the_saved_model_predicts_what_the_trained_one_did(
    example_file: Path, model: IntentModel, tmp_path: Path
) -> None:
    answers = load_answers(example_file)
    trained = train([Example(t, i) for t, i in answers.examples()])
    for text in ("how much is delivery", "发票怎么开", "can I return it after a week"):
        a, b = trained.probabilities(text), model.probabilities(text)
        assert np.allclose(a, b, atol=2e-3)
    assert model.meta["cv"]["folds"] == 5 and 0 < model.threshold < 1


def test_training_refuses_a_single_intent_and_thin_intents() -> None:
    with pytest.raises(TrainingError, match="at least 2 intents"):
        train([Example("a", "x"), Example("b", "x")])
    with pytest.raises(TrainingError, match="fewer than 2 examples: y"):
        train([Example("a", "x"), Example("b", "x"), Example("c", "y")])


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a model written by `gateway answers train`"):
        IntentModel.load(path)


def test_a_model_of_another_feature_set_is_refused(example_model: Path, tmp_path: Path) -> None:
    with np.load(example_model) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["feature_set"] = "answers-grams-0"
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / "old.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match="retrain it"):
        IntentModel.load(path)


# --- ApprovedAnswers ---------------------------------------------------------------------------


@pytest.fixture
def approved(example_file: Path, example_model: Path, tmp_path: Path) -> tuple[Path, Path]:
    answers = tmp_path / "shop.jsonl"
    shutil.copy(example_file, answers)
    return answers, example_model


def test_match_returns_the_approved_answer_with_its_placeholders(
    approved: tuple[Path, Path],
) -> None:
    answers = ApprovedAnswers({"shop": TenantAnswers.load(*approved)})
    match = answers.match("shop", "has my package shipped yet?")
    assert match is not None and match.intent == "track_order"
    assert match.placeholders == ("order_id", "tracking_url")
    rendered = match.render({"order_id": "A1", "tracking_url": "https://t.example/A1"})
    assert rendered.startswith("You can follow order A1 here: https://t.example/A1.")
    assert match.render({}) == match.answer


def test_predict_says_why_the_matcher_abstained(approved: tuple[Path, Path]) -> None:
    answers = ApprovedAnswers({"shop": TenantAnswers.load(*approved)})
    assert answers.predict("nobody", "hi") is None
    verdict = answers.predict("shop", "I don't want to return my shoes")
    assert verdict is not None and verdict.intent is None and verdict.refused == "negation"
    assert answers.match("shop", "I don't want to return my shoes") is None


def test_no_answers_for_another_tenant_or_an_empty_message(approved: tuple[Path, Path]) -> None:
    answers = ApprovedAnswers({"shop": TenantAnswers.load(*approved)})
    assert answers.match("other-shop", "where is my parcel") is None
    assert answers.match("shop", "   ") is None
    answers.set_tenant("shop", None)
    assert answers.match("shop", "where is my parcel") is None


def test_an_intent_removed_from_the_file_is_never_served(approved: tuple[Path, Path]) -> None:
    path, model = approved
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
        if '"track_order"' not in line
    ]
    path.write_text("".join(lines), encoding="utf-8")
    loaded = TenantAnswers.load(path, model)
    assert loaded.stale
    assert ApprovedAnswers({"shop": loaded}).match("shop", "where is my parcel") is None


def test_promoting_a_wording_adds_it_to_its_intent_only(approved: tuple[Path, Path]) -> None:
    path, model = approved
    before = path.read_text(encoding="utf-8").splitlines()
    assert promote_example(path, "refund_time", "where's my money back?")
    assert not promote_example(path, "refund_time", "Where's my   money back?")
    after = path.read_text(encoding="utf-8").splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1
    assert "where's my money back?" in load_answers(path).intents["refund_time"].examples
    assert TenantAnswers.load(path, model).stale


def test_promoting_a_new_answer_appends_an_intent(approved: tuple[Path, Path]) -> None:
    path, _ = approved
    promote_answer(path, "store_hours", "We are open 9-18.", "when are you open")
    assert load_answers(path).intents["store_hours"].examples == ("when are you open",)
    with pytest.raises(AnswersFileError, match="exists"):
        promote_answer(path, "store_hours", "Other.", "opening hours")


def test_a_promotion_that_would_break_the_file_leaves_it_as_it_was(
    approved: tuple[Path, Path],
) -> None:
    path, _ = approved
    before = path.read_bytes()
    with pytest.raises(AnswersFileError, match="unknown placeholder"):
        promote_answer(path, "coupon", "Use code {coupon_code}", "do you have a coupon")
    with pytest.raises(AnswersFileError, match="also an example of intent"):
        promote_example(path, "invoice", "where is my order")
    with pytest.raises(AnswersFileError, match="no intent 'nope'"):
        promote_example(path, "nope", "text")
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_a_text_far_from_every_example_of_its_intent_is_refused(model: IntentModel) -> None:
    assert model.support_floor is not None and 0 < model.support_floor < 1
    near = model.predict("where is my parcel right now")
    assert near.intent == "track_order" and near.support is not None
    assert near.support >= model.support_floor
    # whatever the probability, an out-of-scope question lands far from the chosen intent
    far = model.predict("how would I say thank you in German")
    assert far.intent is None and far.support is not None


def test_the_support_floor_refuses_even_above_the_threshold(model: IntentModel) -> None:
    model.threshold = 0.0  # a threshold an easy set of intents might get
    assert model.predict("who won the football world cup in 1998").intent is None
    assert model.predict("how much is shipping").intent == "shipping_cost"


def test_support_is_the_floor_of_the_examples_own_nearest_neighbours() -> None:
    from gateway.answers.training import support

    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    labels = np.array(["b", "a", "a", "b"])
    vectors = vectors[[2, 0, 1, 3]]  # given in another order than the classes
    examples, offsets, floor, order = support(vectors, labels, ["a", "b"])
    assert offsets.tolist() == [0, 2, 4] and order.tolist() == [1, 2, 0, 3]
    assert np.allclose(examples, [[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]])
    assert floor == pytest.approx(0.8)


def test_a_negated_question_does_not_get_the_answer_its_examples_approve(
    model: IntentModel,
) -> None:
    assert model.predict("I want to return my shoes").intent == "return_policy"
    refused = model.predict("I don't want to return my shoes")
    assert refused.intent is None and refused.refused == "negation"
    # a negation about the asker is not one
    assert model.predict("I don't know how to return my shoes").intent == "return_policy"
