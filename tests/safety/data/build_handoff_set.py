"""Builds ``handoff_labelled.jsonl``: hand-written support turns labelled with handoff signals.

Each row is ``{"text"}`` (one user turn) or ``{"messages"}`` (a conversation whose last turn is
the customer's), with ``"labels"``: the signals a person reading the last turn would act on
(``human_request``, ``anger``, ``legal_threat``, ``repeated_question``, ``intent``; empty = no
handoff). Intents are the shipped defaults (``DEFAULT_INTENTS`` in
``gateway/safety/handoff.py``: a refund dispute, a request to close the account). Run
``python tests/safety/data/build_handoff_set.py`` to rewrite the file.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

H, A, L, R, INTENT = "human_request", "anger", "legal_threat", "repeated_question", "intent"

SINGLE: list[tuple[str, list[str]]] = [
    # ---- explicit requests for a person ----
    ("I want to talk to a human.", [H]),
    ("Can I speak to a real person please?", [H]),
    ("agent", [H]),
    ("Representative!", [H]),
    ("Connect me with a live agent, this bot is not helping.", [H]),
    ("Please transfer me to customer service, a person not a bot.", [H]),
    ("Is there an actual human I can chat with about my order?", [H]),
    ("Let me speak to your manager.", [H]),
    ("I need to talk to someone, not a machine.", [H]),
    ("get me a human", [H]),
    ("Stop the bot and put me through to an operator.", [H]),
    ("Could a member of staff call me back about the damaged sofa?", [H]),
    ("human please", [H]),
    ("I'd like to speak with a supervisor about this refund.", [H]),
    ("Can you escalate this to a real agent? My package is lost.", [H]),
    ("Transfer me to a person, where is my order 55123", [H]),
    ("转人工", [H]),
    ("转人工，我的快递到哪了", [H]),
    ("人工客服在吗？", [H]),
    ("我要找人工", [H]),
    ("给我接人工服务", [H]),
    ("能不能让真人来回答我", [H]),
    ("我不想跟机器人聊，找个真人", [H]),
    ("叫你们经理出来", [H]),
    ("人工！人工！", [H]),
    ("有没有活人啊，我要人工客服", [H]),
    ("麻烦帮我转接人工，退款的事情说不清楚", [H]),
    ("我要和你们的客服主管通话", [H]),
    ("找个人工客服处理一下我的订单", [H]),
    ("请安排客服给我回个电话", [H]),
    # ---- strong anger or abuse ----
    ("This is absolutely ridiculous, third time my order is late. Useless!!!", [A]),
    ("WHERE IS MY PACKAGE??? I PAID TWO WEEKS AGO!!!", [A]),
    ("You guys are a bunch of scammers.", [A]),
    ("what the fuck is wrong with your delivery", [A]),
    ("Your service is pathetic and you are a joke of a company.", [A]),
    ("I am furious. The blender arrived smashed and nobody cares.", [A]),
    ("stupid bot, you understand nothing", [A]),
    ("I'm sick and tired of your lies about the shipping date.", [A]),
    ("This is the worst customer service I have ever experienced. Shame on you.", [A]),
    ("Are you kidding me?! Cancelled AGAIN? Unbelievable!!", [A]),
    ("Damn it, I've been waiting for an hour for a simple answer. Useless piece of crap.", [A]),
    ("你们这是什么垃圾服务！", [A]),
    ("骗子公司，收了钱不发货", [A]),
    ("气死我了，等了半个月还没到！！！", [A]),
    ("你是傻逼吗？听不懂人话？", [A]),
    ("太过分了，每次都这样敷衍我", [A]),
    ("什么破客服，问了半天一点用都没有", [A]),
    ("我真的忍无可忍了，你们到底管不管", [A]),
    ("滚，我不想再看到你们的自动回复", [A]),
    ("坑人的店，再也不买了！！", [A]),
    ("妈的，又延迟发货", [A]),
    ("你们就是一群废物", [A]),
    # ---- legal or regulatory threats ----
    ("If I don't get my money back by Friday I'm contacting my lawyer.", [L]),
    ("I will file a chargeback with my bank.", [L]),
    ("I'm going to report you to the FTC.", [L]),
    ("See you in small claims court.", [L]),
    ("My attorney will be in touch about the injury the heater caused.", [L]),
    ("I'll dispute the charge with Visa if this isn't fixed today.", [L]),
    ("This violates consumer protection law and I will take legal action.", [L]),
    ("I am filing a complaint with the Better Business Bureau.", [L]),
    ("I'm going to sue you for this.", [L]),
    ("I'll report this to trading standards.", [L]),
    ("My solicitor says you are in breach of contract.", [L]),
    ("我要投诉到消协", [L]),
    ("再不处理我就打12315了", [L]),
    ("我会向市场监管局举报你们虚假宣传", [L]),
    ("我已经咨询了律师，准备起诉", [L]),
    ("不退款我就去法院告你们", [L]),
    ("我要去工商局投诉你们", [L]),
    ("信不信我找媒体曝光你们", [L]),
    ("我要向银保监会投诉", [L]),
    ("你们这是违法的，我要报警", [L]),
    ("我会在黑猫投诉上发帖", [L]),
    ("准备申请拒付，让银行处理", [L]),
    # ---- several at once ----
    ("Get me a human NOW or I'm calling my lawyer.", [H, L]),
    ("你们这些骗子！我要转人工！", [A, H]),
    ("I'm disputing this charge with my bank, useless scammers.", [L, A]),
    ("转人工，不然我投诉到消协", [H, L]),
    ("This is a fucking joke, let me talk to a manager.", [A, H]),
    # ---- configured intents ----
    ("I returned the item three weeks ago and still no refund, I want my money back.", [INTENT]),
    ("You refused my refund but the item was faulty, I dispute that decision.", [INTENT]),
    ("The refund was denied and I don't accept it.", [INTENT]),
    ("Please close my account and delete my data.", [INTENT]),
    ("I want to delete my account.", [INTENT]),
    ("退货三周了，退款还没到，我要求退款", [INTENT]),
    ("凭什么拒绝我的退款申请？", [INTENT]),
    ("退款被驳回了，我不接受", [INTENT]),
    ("帮我注销账号", [INTENT]),
    ("我要注销账户，删除我的所有信息", [INTENT]),
    ("Why was my refund rejected? The box was unopened.", [INTENT]),
    ("I was charged but the refund never came, I want it reversed.", [INTENT]),
    # ---- negatives: ordinary questions ----
    ("Where is my order?", []),
    ("How do I return a pair of shoes?", []),
    ("Can I change my delivery address?", []),
    ("What are your opening hours?", []),
    ("Do you ship to Canada?", []),
    ("Is the blue jacket available in size M?", []),
    ("How long does a refund take to reach my card?", []),
    ("What is your refund policy?", []),
    ("Can I pay with PayPal?", []),
    ("Thanks, that solved it!", []),
    ("我的快递到哪了", []),
    ("怎么申请退货？", []),
    ("退款多久到账？", []),
    ("可以开发票吗", []),
    ("这个有红色的吗", []),
    ("好的，谢谢", []),
    ("运费怎么算？", []),
    ("支持货到付款吗？", []),
    ("优惠券怎么用", []),
    ("人工智能音箱有货吗？", []),
    # ---- tricky negatives ----
    ("I'm not angry, just asking when it will ship.", []),
    ("No need for a human, I just want the tracking link.", []),
    ("I don't need to talk to an agent, the bot is fine.", []),
    ("Not mad at all, just curious about the delay.", []),
    ("Is this email a scam? It says my account is locked.", []),
    ("I got a text claiming to be from you asking for my card, is it a scam?", []),
    ("Does the warranty cover damage from a lawyer's office move? Asking for my firm.", []),
    ("The agent who delivered it was lovely, thank you.", []),
    ("What's the difference between a human hair wig and a synthetic one?", []),
    ("Do you sell legal pads?", []),
    ("My husband is a lawyer and needs the invoice in his firm's name.", []),
    ("How do I become a sales agent for your brand?", []),
    ("The human resources department will pay the invoice.", []),
    ("Is there a person-shaped cake mould in stock?", []),
    ("The court shoes I ordered are too small.", []),
    ("No worries, take your time.", []),
    ("This is ridiculously cheap, is it genuine?", []),
    ("This jacket is insanely good, I want another one.", []),
    ("I was a bit annoyed at first but it's sorted now, thanks.", []),
    ("Can I get a refund for the second item? It doesn't fit.", []),
    ("How do I close the app's notifications?", []),
    ("Real leather or fake?", []),
    ("不用转人工，你告诉我运单号就行", []),
    ("我没生气，只是问问什么时候发货", []),
    ("不需要人工客服，谢谢", []),
    ("人工费怎么算？安装要另外收钱吗", []),
    ("这个是真人发货还是自动发货？", []),
    ("律师函格式的信封有卖吗", []),
    ("消协的电话是多少？我想咨询别的事情", []),
    ("我不是要投诉，就是问一下物流", []),
    ("这个垃圾桶多大尺寸？", []),
    ("你们家的骗子鱼饵好用吗", []),
    ("气垫床什么时候到货", []),
    ("滚筒洗衣机有优惠吗", []),
    ("客服你好，请问怎么修改地址", []),
    ("经理推荐的那款还有吗", []),
    ("我想退款，这个尺码不合适", []),
    ("注销会员卡后积分还能用吗", []),
    ("I'm not going to sue anyone, I just want to know where my parcel is.", []),
    ("My bank said a chargeback isn't needed since you already refunded, thanks!", []),
]

# Conversations: the last turn is judged; earlier turns give the repeat signal its context.
CONVERSATIONS: list[tuple[list[tuple[str, str]], list[str]]] = [
    (
        [
            ("user", "When will my order arrive?"),
            ("assistant", "Your order ships within 2 business days and arrives in 3-5 days."),
            ("user", "When will my order arrive?"),
        ],
        [R],
    ),
    (
        [
            ("user", "How do I get a refund for a broken lamp?"),
            ("assistant", "You can request a refund from Orders > Return within 30 days."),
            ("user", "how do i get a refund for the broken lamp??"),
        ],
        [R],
    ),
    (
        [
            ("user", "我的快递到哪了？"),
            ("assistant", "您的包裹正在派送中，预计今天送达。"),
            ("user", "我的快递到底到哪了"),
        ],
        [R],
    ),
    (
        [
            ("user", "退款什么时候到账"),
            ("assistant", "退款一般3-5个工作日原路退回。"),
            ("user", "好的"),
            ("assistant", "还有其他可以帮您的吗？"),
            ("user", "退款到底什么时候到账？"),
        ],
        [R],
    ),
    (
        [
            ("user", "Can I change the delivery address on order 5521?"),
            ("assistant", "Addresses can be changed before the order is packed."),
            ("user", "ok but can I change the delivery address on order 5521"),
        ],
        [R],
    ),
    (
        [
            ("user", "Why was I charged twice?"),
            ("assistant", "Sometimes a pending authorisation shows as a second charge."),
            ("user", "That doesn't answer my question. Why was I charged twice?"),
        ],
        [R],
    ),
    (
        [
            ("user", "怎么取消订单"),
            ("assistant", "在我的订单页面点击取消订单即可。"),
            ("user", "我找不到，怎么取消订单啊"),
        ],
        [R],
    ),
    (
        [
            ("user", "Is the store open on Sunday?"),
            ("assistant", "Our online store is open 24/7."),
            ("user", "I mean the physical store, is it open on Sunday?"),
        ],
        [R],
    ),
    (
        [
            ("user", "What is the warranty on the coffee machine?"),
            ("assistant", "The coffee machine has a 2-year warranty."),
            ("user", "Thanks. And the grinder?"),
            ("assistant", "The grinder has a 1-year warranty."),
            ("user", "what is the warranty on the coffee machine"),
        ],
        [R],
    ),
    (
        [
            ("user", "你们支持七天无理由退货吗"),
            ("assistant", "支持的，商品未使用即可申请。"),
            ("user", "所以支持七天无理由退货吗？"),
        ],
        [R],
    ),
    (
        [
            ("user", "Where is my package?"),
            ("assistant", "It is with the courier and should arrive today."),
            ("user", "Where is my package? It's 9pm and nothing."),
        ],
        [R],
    ),
    (
        [
            ("user", "发票怎么开"),
            ("assistant", "在订单详情页点击申请发票。"),
            ("user", "我问的是发票怎么开？"),
        ],
        [R],
    ),
    (
        [
            ("user", "Can I pay in installments?"),
            ("assistant", "Yes, with Klarna at checkout."),
            ("user", "You already told me that, but can I pay in installments with a credit card?"),
        ],
        [],
    ),
    (
        [
            ("user", "When will my order arrive?"),
            ("assistant", "It should arrive on Thursday."),
            ("user", "Great, thank you!"),
        ],
        [],
    ),
    (
        [
            ("user", "Do you have this in blue?"),
            ("assistant", "Yes, blue is in stock."),
            ("user", "Do you have this in red?"),
        ],
        [],
    ),
    (
        [
            ("user", "我的快递到哪了"),
            ("assistant", "正在派送中。"),
            ("user", "好的谢谢"),
        ],
        [],
    ),
    (
        [
            ("user", "ok"),
            ("assistant", "Anything else I can help with?"),
            ("user", "ok"),
        ],
        [],
    ),
    (
        [
            ("user", "How much is shipping to Germany?"),
            ("assistant", "Shipping to Germany is 9.90 EUR."),
            ("user", "How much is shipping to France?"),
        ],
        [],
    ),
    (
        [
            ("user", "退货地址是哪里"),
            ("assistant", "请寄回上海仓，地址会在退货单上显示。"),
            ("user", "换货地址是哪里"),
        ],
        [],
    ),
    (
        [
            ("user", "Where is my order?"),
            ("user", "Where is my order?"),
        ],
        [],
    ),
    (
        [
            ("system", "You are a helpful assistant for Acme. Be concise."),
            ("user", "Hi, I want to return my shoes."),
            ("assistant", "Sure, go to Orders > Return."),
            ("user", "Done, thanks. Can I speak to a human about a separate issue?"),
        ],
        [H],
    ),
    (
        [
            ("user", "Where is my refund?"),
            ("assistant", "Refunds take 5-7 days."),
            ("user", "It's been 3 weeks. Where is my refund?! This is a scam."),
        ],
        [R, A],
    ),
    (
        [
            ("user", "我的退款呢"),
            ("assistant", "退款处理中。"),
            ("user", "我的退款呢？再不退我就投诉到12315"),
        ],
        [R, L],
    ),
    (
        [
            ("user", "I asked for a human earlier"),
            ("assistant", "I can help you here. What do you need?"),
            ("user", "Fine, what are your opening hours?"),
        ],
        [],
    ),
]


def main() -> None:
    rows: list[dict[str, object]] = []
    for text, labels in SINGLE:
        rows.append({"text": text, "labels": labels})
    for turns, labels in CONVERSATIONS:
        rows.append(
            {"messages": [{"role": r, "content": c} for r, c in turns], "labels": labels}
        )
    out = HERE / "handoff_labelled.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        for label in row["labels"] or ["none"]:  # type: ignore[attr-defined]
            counts[label] = counts.get(label, 0) + 1
    print(f"wrote {out}: {len(rows)} rows {counts}")


if __name__ == "__main__":
    main()
