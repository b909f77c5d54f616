"""Builds ``masking_check.jsonl`` and ``handoff_check.jsonl``: smaller sets written after the
detectors were tuned on ``masking_labelled.jsonl`` / ``handoff_labelled.jsonl`` and never tuned on,
so their scores estimate what unseen text gets (docs/safety.md reports both). Same markup and
span rules as ``build_masking_set.py``; the handoff rows as in ``build_handoff_set.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import build_masking_set as masking

HERE = Path(__file__).resolve().parent

MASKING: list[str] = [
    "hey its ⟦email|mike.j@company.io⟧ - I can't reset my password",
    "Reach me: ⟦phone|+44 7700 900 077⟧ (mobile), ⟦email|r.singh@btinternet.com⟧",
    "Call ⟦phone|(555) 867-5309⟧? No wait that's wrong, call ⟦phone|(415) 867-5309⟧.",
    "I live at ⟦address|10 Downing Street, London SW1A 2AA⟧, true story.",
    "Deliver to ⟦address|4059 Mt Lee Drive, Hollywood, CA 90068⟧ by Friday please",
    "my cc is ⟦card|gen:visa|plain⟧ exp 04/28 cvv 123 can u retry the payment",
    "The charge on ⟦card|gen:mc|dash⟧ is a duplicate.",
    "Amex ⟦card|gen:amex|dash⟧ was charged £89.",
    "Payment card: ⟦card|gen:unionpay16|space⟧ (ICBC).",
    "Card number ⟦card|gen:discover|plain⟧, billing zip 10001.",
    "I paid ¥2,399 with ⟦card|gen:unionpay|space⟧ on 2024/06/18 but the order shows unpaid.",
    "Bank: ⟦iban|gen:GB|spaced⟧, Ref: ORDER-55231",
    "IBAN ⟦iban|gen:IT|spaced⟧ intestato a Rossi Marco",
    "Please pay back to ⟦iban|gen:NL|plain⟧ asap",
    "iban: ⟦iban|gen:ES|plain⟧",
    "身份证号码⟦cn_id|gen⟧，出生日期不对，请帮忙改一下",
    "办理退税要身份证，我的是⟦cn_id|genX⟧。",
    "ID: ⟦cn_id|gen⟧, name Zhang Wei, for the customs declaration.",
    "请联系收货人⟦phone|138 0013 8000⟧或者⟦phone|0571-88886666⟧",
    "我的手机：⟦phone|+86 159-0000-1234⟧，麻烦发货前打电话",
    "电话号码是⟦phone|18210002000⟧，姓王",
    "帮我把手机号从⟦phone|13000000001⟧改成⟦phone|13100000002⟧",
    "邮箱：⟦email|2837465@qq.com⟧，请发电子发票",
    "公司邮箱⟦email|purchase@sh-meiya.com⟧，合同请发这里",
    "收货地址：⟦address|广东省广州市番禺区市桥街大北路45号⟧",
    "地址是⟦address|北京市东城区东直门南大街5号⟧，麻烦快点",
    "寄到⟦address|深圳市福田区深南大道6008号⟧，电话⟦phone|13723456789⟧",
    "我的地址⟦address|浙江省宁波市鄞州区天童南路588号8幢1202室⟧",
    "请送到⟦address|昆明市五华区东风西路123号⟧前台",
    "Send it to ⟦address|1200 Getty Center Dr, Los Angeles, CA 90049⟧.",
    "Ship to ⟦address|77 Massachusetts Avenue, Cambridge, MA 02139⟧, Building 10.",
    "退款到银行卡⟦card|gen:unionpay16|plain⟧，户名李四，开户行中国银行",
    "account no: ⟦bank_account|55501234567⟧, routing 026009593",
    "银行账号：⟦bank_account|6230 5800 0012 3456 78⟧",
    "Text me at ⟦phone|+1 415 555 0111⟧ when the courier is close.",
    "Ring ⟦phone|+49 30 901820⟧ (office) or ⟦phone|+49 170 1234567⟧.",
    "WeChat/phone ⟦phone|13912340000⟧, email ⟦email|hl.zhang@zju.edu.cn⟧",
    # negatives
    "Order 13800000000 hasn't shipped yet.",
    "我的订单 18812345678 显示已付款",
    "Tracking: 13812345678 — where is it?",
    "运单号：13512345678，麻烦查一下",
    "发票号 13678901234",
    "The item costs $1,380.00 and I bought 13 of them.",
    "I was born on 1990-01-01 and I'm 34.",
    "Promo code 13812345678 did not work",
    "Case #15012345678 is still open.",
    "SKU 6901234567892 is the barcode on the box.",
    "Order number: 4532015112830366",
    "We spoke on 2024-06-18 at 14:05 about ticket 20240618.",
    "The serial is 1234-5678-9012-3456 on the sticker.",
    "手机型号是 iPhone 13，序列号 F2LX12345678",
    "商品编号100012043978，有货吗",
    "我的会员号是 110101199003077777",
]

H, A, L, R, N = "human_request", "anger", "legal_threat", "repeated_question", "intent"

HANDOFF: list[tuple[object, list[str]]] = [
    ("Can I please talk to someone from your team?", [H]),
    ("I'd prefer to speak with an actual agent.", [H]),
    ("Is there a phone number where I can reach a person?", [H]),
    ("operator", [H]),
    ("pls connect me to customer support staff", [H]),
    ("请转人工客服", [H]),
    ("我要人工服务", [H]),
    ("能不能找个客服人员跟我说", [H]),
    ("机器人听不懂，换人工", [H]),
    ("This company is a total joke. Worst purchase ever.", [A]),
    ("you people are incompetent", [A]),
    ("I AM SO DONE WITH THIS!!!", [A]),
    ("Screw this, I'm never ordering again.", [A]),
    ("太气人了，客服就会复制粘贴", [A]),
    ("你们这服务真是垃圾到家了", [A]),
    ("什么玩意儿，一群骗子", [A]),
    ("I'll be speaking to a lawyer about this.", [L]),
    ("I've opened a dispute with PayPal.", [L]),
    ("Expect to hear from my attorney.", [L]),
    ("I'm reporting this to consumer protection.", [L]),
    ("我已经向消费者协会投诉了", [L]),
    ("再这样我就去12315投诉", [L]),
    ("我要起诉你们", [L]),
    ("我会向工商部门反映", [L]),
    ("My refund request was rejected for no reason.", [N]),
    ("我的退款申请被拒绝了，为什么", [N]),
    ("I want my account deleted.", [N]),
    (
        [
            ("user", "Can I return an opened item?"),
            ("assistant", "Opened items can be returned within 14 days if undamaged."),
            ("user", "Can I return an opened item or not?"),
        ],
        [R],
    ),
    (
        [
            ("user", "优惠券为什么用不了"),
            ("assistant", "请确认订单金额满足使用门槛。"),
            ("user", "优惠券为什么用不了啊？"),
        ],
        [R],
    ),
    (
        [
            ("user", "How long is delivery to Spain?"),
            ("assistant", "Delivery to Spain takes 3-5 business days."),
            ("user", "How long is delivery to Italy?"),
        ],
        [],
    ),
    (
        [
            ("user", "有没有黑色的"),
            ("assistant", "黑色有货。"),
            ("user", "有没有白色的"),
        ],
        [],
    ),
    ("Hello, is anyone there?", []),
    ("I'm just checking the status, no rush.", []),
    ("Not upset, the parcel just hasn't come.", []),
    ("Please don't transfer me, I'm fine with the chat.", []),
    ("Which agent courier do you use in Germany?", []),
    ("Is the jacket made from real leather?", []),
    ("Can your manager approve a bulk discount? We need 200 units.", []),
    ("I saw a lawyer recommend your product on YouTube.", []),
    ("How do I dispute a charge if I ever need to?", []),
    ("不用人工，谢谢", []),
    ("人工智能客服挺好用的", []),
    ("我不生气，就是想知道什么时候到", []),
    ("你们的垃圾袋是可降解的吗", []),
    ("请问怎么投诉建议？我有个改进意见", []),
    ("如何申请退款", []),
    ("我要退货退款", []),
    ("账号怎么注册", []),
    ("经理说可以给我打折，是真的吗", []),
    ("这款真的很骗人眼睛，颜色太好看了", []),
]


def main() -> None:
    masking.rng = random.Random(20261127)
    rows = [masking.render(m) for m in MASKING]
    with (HERE / "masking_check.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    entities = sum(len(r["entities"]) for r in rows)  # type: ignore[arg-type]
    print(f"masking_check.jsonl: {len(rows)} messages, {entities} entities")
    out = []
    for item, labels in HANDOFF:
        if isinstance(item, str):
            out.append({"text": item, "labels": labels})
        else:
            turns = [{"role": r, "content": c} for r, c in item]  # type: ignore[attr-defined]
            out.append({"messages": turns, "labels": labels})
    with (HERE / "handoff_check.jsonl").open("w", encoding="utf-8") as fh:
        for row in out:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"handoff_check.jsonl: {len(out)} rows")


if __name__ == "__main__":
    main()
