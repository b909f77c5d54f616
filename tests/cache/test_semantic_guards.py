"""Each guard on its own: what must be equal besides meaning, in English and Chinese."""

from __future__ import annotations

import pytest

from gateway.cache.semantic.guards import conflict, mask, normalise, signature, tenant_key

KEY = tenant_key(b"s" * 32, "shop")


def why(a: str, b: str, key: bytes = KEY) -> str | None:
    return conflict(signature(normalise(a), key), signature(normalise(b), key))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("cancel order 1001", "cancel order 1002"),
        ("我的订单123456什么时候发货", "我的订单654321什么时候发货"),
        ("is shipping free over $50?", "is shipping free over $100?"),
        ("can I return shoes after 30 days", "can I return shoes after 60 days"),
        ("will it arrive by 2024-05-01", "will it arrive by 2024-05-02"),
        ("send it to ann@example.com", "send it to bob@example.com"),
        ("is SKU AB-1234 in stock", "is SKU AB-1235 in stock"),
        ("cancel order 1001", "cancel my order"),
    ],
)
def test_different_entities_conflict(a: str, b: str) -> None:
    assert why(a, b) == "entities"


def test_the_same_entity_written_differently_does_not_conflict() -> None:
    assert why("refund of 1,200 dollars for order 0042", "order 42: refund 1200 dollars") is None
    assert why("订单１２３４５６", "订单123456") is None  # full-width digits


def test_entities_are_keyed_hashes_never_the_values() -> None:
    sig = signature(normalise("order 98765432 for ann@example.com"), KEY)
    stored = repr(sig.as_json())
    assert "98765432" not in stored and "ann@example.com" not in stored and "ann" not in stored
    other = signature(normalise("order 98765432 for ann@example.com"), tenant_key(b"s" * 32, "x"))
    assert sig.entities.isdisjoint(other.entities)


def test_the_embedded_text_has_its_entities_masked() -> None:
    assert mask("cancel order 1001 for ann@example.com") == "cancel order # for #"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("I want a refund", "I don't want a refund"),
        ("I want the refund", "I do not want the refund"),
        ("my package arrived", "my package never arrived"),
        ("支持货到付款吗", "不支持货到付款吗"),
        ("收到退款了", "没收到退款"),
    ],
)
def test_negation_conflicts(a: str, b: str) -> None:
    assert why(a, b) == "negation"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("能不能开发票", "可以开发票吗"),  # A-not-A is a question, not a negation
        ("有没有优惠券", "有优惠券吗"),
        ("不好意思，运费怎么算", "请问运费怎么算"),
        ("I can't not go", "I can go"),  # two negations
    ],
)
def test_what_only_looks_like_negation_does_not_conflict(a: str, b: str) -> None:
    assert why(a, b) != "negation"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("how do I add a payment method", "how do I remove a payment method"),
        ("how do I open an account", "how do I close an account"),
        ("如何关闭自动续费", "如何开通自动续费"),
        ("怎么取消订单", "怎么恢复已取消的订单"),
        ("how do I subscribe to the newsletter", "how do I unsubscribe from the newsletter"),
        ("please lock my card", "please unlock my card"),
        ("我要投诉快递员", "我要表扬快递员"),
    ],
)
def test_opposite_directions_conflict(a: str, b: str) -> None:
    assert why(a, b) == "direction"


def test_naming_no_direction_does_not_conflict_with_one() -> None:
    assert why("会员有什么权益", "开通会员有哪些好处") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("change my delivery address", "change my billing address"),
        ("track my refund", "request a refund"),
        ("怎么申请退货", "怎么申请换货"),
        ("change to the pro account", "change the info on the pro account"),
    ],
)
def test_minimal_pairs_conflict(a: str, b: str) -> None:
    assert why(a, b) == "minimal pair"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("where is my order?", "Where is my order"),
        ("when will I get my refund", "how long does a refund take"),
        ("cancelling my order", "cancel my order please"),
        ("收货地址怎么改", "怎么修改收货地址"),
    ],
)
def test_paraphrases_pass_every_guard(a: str, b: str) -> None:
    assert why(a, b) is None
