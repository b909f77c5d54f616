"""The Chinese→English glossary in front of the embedder: synonyms meet, English is untouched,
and cross-language wordings of one question come closer. Fixtures are our own sentences."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.embedder import WordLlamaEmbedder
from gateway.gloss import GLOSS_VERSION, gloss


def test_synonyms_get_one_english_meaning() -> None:
    assert gloss("邮费") == gloss("运费") == gloss("快递费") == "shipping fee"
    assert gloss("几时") == gloss("什么时候") == "when"


def test_the_longest_glossary_word_wins() -> None:
    assert gloss("货到付款") == "cash on delivery"  # not 货 + 到 + 付款
    assert gloss("人工客服") == "human agent"
    assert gloss("开发票") == "issue invoice"  # 开 + 发票, not 开发 + 票


def test_unknown_characters_stay_and_particles_go() -> None:
    assert gloss("积分的规则呢") == "points rule"
    assert gloss("熊猫") == "熊猫"


def test_text_without_chinese_is_returned_as_it_is() -> None:
    text = "Where is MY parcel? 100% sure"
    assert gloss(text) is text


@pytest.fixture(scope="module")
def embedders() -> tuple[WordLlamaEmbedder, WordLlamaEmbedder]:
    return WordLlamaEmbedder.load(), WordLlamaEmbedder.load(glossed=False)


def test_the_embedder_names_its_glossary(
    embedders: tuple[WordLlamaEmbedder, WordLlamaEmbedder],
) -> None:
    glossed, plain = embedders
    assert glossed.name == f"{plain.name}+gloss-{GLOSS_VERSION}"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("积分怎么用", "积分可以怎么使用"),
        ("退款多久到账", "how long until the refund arrives"),
        ("我的包裹到哪了", "where is my parcel"),
        ("怎么解绑银行卡", "how do I unlink my bank card"),
    ],
)
def test_glossed_wordings_of_one_question_are_closer(
    embedders: tuple[WordLlamaEmbedder, WordLlamaEmbedder], a: str, b: str
) -> None:
    glossed, plain = embedders
    with_gloss = float(np.dot(glossed.embed(a), glossed.embed(b)))
    without = float(np.dot(plain.embed(a), plain.embed(b)))
    assert with_gloss > without + 0.05


def test_english_is_embedded_as_before(
    embedders: tuple[WordLlamaEmbedder, WordLlamaEmbedder],
) -> None:
    glossed, plain = embedders
    text = "can I change the delivery address"
    assert np.array_equal(glossed.embed(text), plain.embed(text))
