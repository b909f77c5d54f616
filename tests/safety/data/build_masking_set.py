"""Builds ``masking_labelled.jsonl``: hand-written support messages with their entities labelled.

The messages are written by hand; only the checksum-bearing values (card numbers, Chinese ID
numbers, IBANs) are generated, seeded, so that they are valid (or, for the negatives, invalid on
purpose). Markup in the messages below:

* ``⟦type|value⟧``: an entity to mask, written literally; the label is the span of ``value``.
* ``⟦card|gen:BRAND|GROUPS⟧``, ``⟦cn_id|gen⟧``, ``⟦cn_id|genX⟧``, ``⟦iban|gen:CC|spaced⟧``: an
  entity whose valid value is generated (GROUPS: ``plain``, ``space``, ``dash``).
* ``⟨bad:KIND⟩``: a look-alike that fails its checksum (``card``, ``cn_id``, ``iban``), written
  into the text unlabelled: it must not be masked as that type.

Span labels (what a masker must return, exactly):

* phone: the number with its country prefix (``+86``, ``0086``, ``+1``) and brackets, without a
  leading "tel:" or trailing punctuation;
* address: Chinese, from the first administrative name (省/市/区/县) or the road to the last
  house, building, unit or room number; English, from the house number through the street
  type and an apartment/suite/unit, plus ", City, ST 12345" (US) or ", City POSTCODE" (UK) when
  written.

Labelled order/tracking/invoice numbers and product codes are not entities. Run
``python tests/safety/data/build_masking_set.py`` to rewrite the JSONL file.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(20261126)

# --- generators --------------------------------------------------------------------------------


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


CARD_BRANDS = {
    "visa": (["4"], 16),
    "mc": (["51", "52", "53", "54", "55"], 16),
    "mc2": (["2221", "2300", "2720"], 16),
    "amex": (["34", "37"], 15),
    "unionpay": (["6222", "6217", "6228", "6214"], 19),
    "unionpay16": (["6225", "6259", "6282"], 16),
    "discover": (["6011", "65"], 16),
    "jcb": (["3528", "3589"], 16),
}


def card_number(brand: str) -> str:
    prefixes, length = CARD_BRANDS[brand]
    body = rng.choice(prefixes)
    while len(body) < length - 1:
        body += str(rng.randrange(10))
    return body + luhn_check_digit(body)


def group(number: str, style: str) -> str:
    if style == "plain":
        return number
    sep = " " if style == "space" else "-"
    if len(number) == 15:  # Amex 4-6-5
        parts = [number[:4], number[4:10], number[10:]]
    else:
        parts = [number[i : i + 4] for i in range(0, len(number), 4)]
    return sep.join(parts)


ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
AREAS = ("110101", "310104", "440305", "330106", "510107", "420102", "320102", "370202", "610113")


def cn_id(want_x: bool = False) -> str:
    while True:
        year = rng.randrange(1955, 2006)
        month = rng.randrange(1, 13)
        day = rng.randrange(1, 29)
        body = f"{rng.choice(AREAS)}{year:04d}{month:02d}{day:02d}{rng.randrange(1000):03d}"
        check = ID_CHECK[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS, strict=True)) % 11]
        if (check == "X") == want_x:
            return body + check


IBAN_BBAN = {  # country: BBAN layout (d digit, a upper letter, c either)
    "DE": "dddddddddddddddddd",
    "GB": "aaaadddddddddddddd",
    "FR": "ddddddddddcccccccccccdd",
    "NL": "aaaadddddddddd",
    "ES": "dddddddddddddddddddd",
    "IT": "addddddddddcccccccccccc",
    "BE": "dddddddddddd",
    "CH": "dddddcccccccccccc",
}


def iban_check(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return f"{98 - int(numeric) % 97:02d}"


def iban(country: str) -> str:
    bban = ""
    for kind in IBAN_BBAN[country]:
        if kind == "d":
            bban += str(rng.randrange(10))
        elif kind == "a":
            bban += chr(rng.randrange(65, 91))
        else:
            bban += rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")
    return country + iban_check(country, bban) + bban


def spaced(value: str) -> str:
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def broken(value: str) -> str:
    """The same shape, checksum wrong."""
    last = value[-1]
    if last.isdigit():
        return value[:-1] + str((int(last) + 3) % 10)
    return value[:-1] + "7"


def bad(kind: str) -> str:
    if kind == "card":
        return group(broken(card_number(rng.choice(["visa", "mc", "unionpay16"]))), "plain")
    if kind == "card_space":
        return group(broken(card_number("visa")), "space")
    if kind == "cn_id":
        return broken(cn_id())
    if kind == "iban":
        value = iban(rng.choice(["DE", "GB", "NL"]))
        return value[:2] + f"{(int(value[2:4]) + 1) % 100:02d}" + value[4:]
    raise ValueError(kind)


# --- the messages ------------------------------------------------------------------------------

MESSAGES: list[str] = [
    # ---- English: phones ----
    "Hi, my parcel never arrived. You can call me on ⟦phone|+1 (415) 555-2671⟧ after 5pm.",
    "Please update my contact number to ⟦phone|07700 900123⟧, the old one is disconnected.",
    "Courier rang from ⟦phone|+44 20 7946 0958⟧ but I missed it, was that you?",
    "Can someone call me back at ⟦phone|(212) 555-0147⟧? Order 88213 is still not shipped.",
    "my number is ⟦phone|415-555-0199⟧ text me when the refund is done",
    "Reach me on WhatsApp ⟦phone|+49 151 23456789⟧ please, I'm travelling.",
    "The delivery guy should phone ⟦phone|+33 6 12 34 56 78⟧ when he arrives.",
    "Phone: ⟦phone|+1-646-555-0123⟧. I ordered 3 items on 2024-03-15 and got 2.",
    "Call me at ⟦phone|650.555.0175⟧ or email ⟦email|dana.whitfield@gmail.com⟧.",
    "I changed my mobile to ⟦phone|+86 139 1024 5567⟧, please use that for delivery SMS.",
    "Hello, could the driver ring ⟦phone|+61 412 345 678⟧ before delivering? Gate code is 4521.",
    "My old number ⟦phone|(303) 555-0112⟧ is on the account, new one is ⟦phone|(303) 555-0186⟧.",
    "Please don't call ⟦phone|+1 800 555 0100⟧, that's my office. Use email instead.",
    "Japan number: ⟦phone|+81 90-1234-5678⟧. I'm waiting for order 558201.",
    "hi i got a missed call from ⟦phone|+852 9123 4567⟧ saying my package is held, is that legit?",
    # ---- English: e-mail ----
    "Send the invoice to ⟦email|accounts@brightlane-design.co.uk⟧ please.",
    "I never got the confirmation e-mail, my address is ⟦email|j.okafor+shop@outlook.com⟧",
    "Please change my login from ⟦email|mia_chen88@yahoo.com⟧ to ⟦email|mia.chen@protonmail.me⟧.",
    "Can you cc ⟦email|returns-team@northwind.example.org⟧ on the return label?",
    "email me at ⟦email|TOM.HARDY1990@HOTMAIL.COM⟧ thanks",
    "Your reply went to ⟦email|sarah@kleinfamily.net⟧, but I use ⟦email|s.klein@work-mail.de⟧ now.",
    "The receipt was sent to ⟦email|li.wei@163.com⟧ and I can't find it.",
    "Contact: ⟦email|o'brien.pat@eircom.net⟧ (I know, the apostrophe breaks every form)",
    # ---- English: cards ----
    "I was charged twice on my card ⟦card|gen:visa|space⟧ for the same order.",
    "Refund should go back to ⟦card|gen:mc|plain⟧, not store credit.",
    "The payment failed with card number ⟦card|gen:amex|space⟧, can you check?",
    "I used my Discover ⟦card|gen:discover|dash⟧ and the charge shows as pending for 5 days.",
    "Card ⟦card|gen:mc2|space⟧ expires 09/27, please update it on my subscription.",
    "why did you charge ⟦card|gen:visa|dash⟧ $49.99 when the price was $39.99??",
    "My JCB card ⟦card|gen:jcb|plain⟧ was declined at checkout three times today.",
    "Replace the card on file (⟦card|gen:visa|plain⟧) with ⟦card|gen:mc|space⟧ please.",
    # ---- English: IBAN / bank ----
    "Please refund to my IBAN ⟦iban|gen:DE|spaced⟧ instead of the card.",
    "Bank details for the refund: ⟦iban|gen:GB|plain⟧, account holder Mark Ellis.",
    "IBAN: ⟦iban|gen:NL|spaced⟧ (ING). Thanks for sorting this out.",
    "Can you wire the deposit back to ⟦iban|gen:FR|spaced⟧?",
    "Mon IBAN est ⟦iban|gen:FR|plain⟧, merci. Sorry, I mean: that is my IBAN.",
    "Use ⟦iban|gen:ES|spaced⟧ for the compensation, it's my Santander account.",
    "My account number is ⟦bank_account|40308669⟧ and the sort code is 20-00-00.",
    "Bank account: ⟦bank_account|0123456789012⟧ at Chase, routing 021000021.",
    "Please send it to acct no. ⟦bank_account|9876543210⟧ (checking).",
    "The refund went to IBAN ⟦iban|gen:IT|spaced⟧ but my bank says nothing arrived.",
    "refund to ⟦iban|gen:BE|plain⟧ pls",
    "Swiss account ⟦iban|gen:CH|spaced⟧, the franc amount is fine.",
    # ---- English: addresses ----
    "Please ship to ⟦address|742 Evergreen Terrace, Springfield, IL 62704⟧ instead.",
    "New address: ⟦address|221B Baker Street, London NW1 6XE⟧.",
    "I moved to ⟦address|1600 Pennsylvania Avenue NW, Washington, DC 20500⟧ last week lol",
    "Deliver to ⟦address|88 Colin P Kelly Jr Street, San Francisco, CA 94107⟧, reception desk.",
    "The parcel was left at ⟦address|12 Oak Lane⟧ but I live at ⟦address|21 Oak Lane⟧!",
    "Can you change the delivery address to ⟦address|455 Main St, Apt 3B⟧?",
    "My billing address is ⟦address|3100 Ocean Park Blvd, Suite 200, Santa Monica, CA 90405⟧.",
    "send the replacement to ⟦address|9 Riverside Drive⟧, same city",
    "Pick-up point was ⟦address|500 W 2nd Street, Austin, TX 78701⟧, is that right?",
    "Return it from ⟦address|27 Hawthorn Road, Manchester M20 2RN⟧.",
    # ---- English: mixed ----
    "I'm ⟦email|raj.patel@gmail.com⟧, phone ⟦phone|+1 (408) 555-0163⟧, order 77120 "
    "hasn't moved since Monday.",
    "Address ⟦address|19 Market Street, Apt 4⟧, phone ⟦phone|(617) 555-0198⟧, card ending 4421.",
    "Refund the ⟦card|gen:visa|space⟧ payment, or to ⟦iban|gen:DE|plain⟧ if the card fails.",
    "Hi it's me again, ⟦email|kate.m@icloud.com⟧. Call ⟦phone|+44 7911 123456⟧ if easier.",
    # ---- Chinese: phones ----
    "你好，我的手机号是⟦phone|13812345678⟧，快递员一直联系不上我。",
    "麻烦让快递员打这个电话：⟦phone|139-1024-5567⟧，谢谢！",
    "收件人电话⟦phone|+86 186 2233 4455⟧，请尽快安排配送。",
    "我换号了，新号码⟦phone|15900112233⟧，旧的不用了。",
    "联系电话 ⟦phone|0086 137 0000 1111⟧，白天都在。",
    "有事打我手机⟦phone|１７７１２３４５６７８⟧（全角的，不好意思）",
    "我老婆的电话⟦phone|150 1234 5678⟧，她在家可以签收。",
    "退货的时候快递员说打⟦phone|021-62345678⟧就行，是你们仓库吗？",
    "座机⟦phone|010-87654321⟧，手机⟦phone|18601012345⟧，哪个都行。",
    "下单时留的电话⟦phone|13511112222⟧写错了，应该是⟦phone|13511112233⟧。",
    "打⟦phone|+8613623456789⟧找我，微信同号。",
    "客服你好，⟦phone|19912345678⟧ 这个号码收不到验证码怎么办？",
    "深圳的电话⟦phone|0755-86013388⟧一直占线，我只好在这里问。",
    "请回电⟦phone|18800001234⟧，我想改一下配送时间。",
    "⟦phone|17612349876⟧ 是我的手机，收到货了给我发个短信。",
    # ---- Chinese: e-mail ----
    "发票发到我邮箱⟦email|zhangsan_2020@qq.com⟧就可以了。",
    "我的注册邮箱是⟦email|wangfang.bj@126.com⟧，登录不了。",
    "请把电子发票发送到⟦email|finance@huaxin-tech.com.cn⟧，抬头是公司名。",
    "邮箱⟦email|xiaoming.liu@foxmail.com⟧，账号被冻结了",
    "换绑邮箱：⟦email|chen.jing@sina.cn⟧",
    # ---- Chinese: cards and bank accounts ----
    "退款请退到我的银行卡⟦card|gen:unionpay|space⟧，谢谢。",
    "我的卡号⟦card|gen:unionpay16|plain⟧被扣了两次钱。",
    "信用卡⟦card|gen:visa|space⟧扣款失败了，怎么回事？",
    "用的是招行的卡⟦card|gen:unionpay|plain⟧，退款什么时候到账？",
    "银行卡号：⟦card|gen:unionpay|dash⟧，户名张伟。",
    "支付时用的⟦card|gen:mc|space⟧这张卡，显示已扣款但订单没成功。",
    "请打到我的对公账户，账号⟦bank_account|1001 2345 6789 0123⟧，开户行工商银行。",
    "银行账号⟦bank_account|31050161373600000123⟧，建设银行上海分行。",
    "收款账户：⟦bank_account|6228480010987654⟧（农行）",
    "退到这个账号吧 ⟦bank_account|110060123018000456789⟧ 交通银行",
    "我的银行卡号是⟦bank_account|6217000010001234567⟧，麻烦核对一下。",
    "卡号⟦card|gen:unionpay16|space⟧，开户行建设银行，退款就退这里。",
    # ---- Chinese: ID numbers ----
    "实名认证一直失败，我的身份证号是⟦cn_id|gen⟧。",
    "身份证⟦cn_id|genX⟧，最后一位是X，系统总说格式不对。",
    "清关需要身份证号码：⟦cn_id|gen⟧，收件人李娜。",
    "报关信息：姓名王强，证件号⟦cn_id|gen⟧，电话⟦phone|13698765432⟧。",
    "我身份证是⟦cn_id|genX⟧，为什么提示已被绑定？",
    "帮我查一下⟦cn_id|gen⟧这个身份证下面有几个账号",
    "证件号码 ⟦cn_id|gen⟧ 姓名 赵敏",
    "海关说身份证⟦cn_id|gen⟧和姓名不一致，我没填错啊。",
    "My Chinese ID for customs is ⟦cn_id|genX⟧, the name is Liu Yang.",
    "ID number ⟦cn_id|gen⟧ - please use this for the cross-border order.",
    # ---- Chinese: addresses ----
    "收货地址改成⟦address|北京市朝阳区建国路88号SOHO现代城3号楼1201室⟧。",
    "请寄到⟦address|上海市浦东新区世纪大道100号⟧，前台代收。",
    "地址：⟦address|广东省深圳市南山区科技园南区高新南七道12号⟧",
    "我搬家了，新地址⟦address|浙江省杭州市西湖区文三路478号2单元501室⟧",
    "送到⟦address|成都市武侯区人民南路四段27号⟧就行，门卫收。",
    "快递放在⟦address|南京市鼓楼区中山北路30号⟧的驿站了吗？",
    "地址写错了，应该是⟦address|武汉市洪山区珞喻路1037号⟧，不是1073号。",
    "麻烦寄到⟦address|西安市雁塔区科技路48号创业广场B座1805室⟧，谢谢",
    "收件地址：⟦address|江苏省苏州市工业园区星湖街328号⟧，电话⟦phone|13962123456⟧。",
    "⟦address|青岛市市南区香港中路61号⟧，这个地址能送吗？",
    "寄到⟦address|广州市天河区天河路208号⟧，收件人陈先生。",
    "我住⟦address|重庆市渝中区解放碑民权路28号⟧，今天能送到吗",
    # ---- mixed language ----
    "Hi 我的邮箱是⟦email|amy.zhou@gmail.com⟧, phone ⟦phone|13011112222⟧, 订单还没到。",
    "Please ship to ⟦address|上海市徐汇区漕溪北路18号⟧, recipient 王先生, tel ⟦phone|18912345678⟧.",
    "退款 to my card ⟦card|gen:visa|plain⟧ please，谢谢",
    "IBAN ⟦iban|gen:DE|spaced⟧，请用欧元退款。",
    # ---- more of each type, longer messages ----
    "Hello, I placed an order last night and paid with ⟦card|gen:visa|space⟧. The page timed "
    "out, and now I see two charges of $86.40. My phone is ⟦phone|+1 (917) 555-0121⟧ and my "
    "email ⟦email|greg.alvarez@fastmail.com⟧. Please refund one of them today.",
    "我昨天在你们店买了一台空气净化器，用⟦card|gen:unionpay|plain⟧付的款，页面显示支付失败，"
    "但是银行扣了2399元。请尽快处理，电话⟦phone|13316668888⟧，地址⟦address|"
    "天津市和平区南京路189号⟧。",
    "Card: ⟦card|gen:amex|plain⟧ / exp 11/26 / name J Brooks. Charged for a cancelled order.",
    "It's the ⟦card|gen:discover|space⟧ card, the one ending in the last group there.",
    "Pay the difference with ⟦card|gen:jcb|space⟧ please.",
    "卡号⟦card|gen:unionpay16|dash⟧，已经挂失了，不要再扣这张卡了。",
    "信用卡号码⟦card|gen:mc|plain⟧，账单日每月5号。",
    "Use ⟦card|gen:mc2|plain⟧ for the next renewal.",
    "Tried ⟦card|gen:visa|plain⟧ and then ⟦card|gen:amex|space⟧, both declined. What's wrong?",
    "实名信息：⟦cn_id|gen⟧，手机⟦phone|18022223333⟧，邮箱⟦email|lm_2021@163.com⟧。",
    "身份证号码⟦cn_id|gen⟧，护照号E12345678。",
    "买保险需要填身份证：⟦cn_id|genX⟧",
    "收件人身份证⟦cn_id|gen⟧，是我妈妈的。",
    "请核对证件号：⟦cn_id|gen⟧。",
    "我的身份证⟦cn_id|gen⟧过期了，还能认证吗？",
    "⟦cn_id|genX⟧这个是我的身份证号，麻烦帮我解绑。",
    "For the customs form: passport G12345678, Chinese ID ⟦cn_id|gen⟧.",
    "身份证号⟦cn_id|gen⟧，姓名刘洋，请帮我把订单改成我的名字。",
    "我老公的身份证号是⟦cn_id|genX⟧，他来取件。",
    "IBAN ⟦iban|gen:GB|spaced⟧ - that's Barclays. Reference the order please.",
    "Refund to ⟦iban|gen:NL|plain⟧.",
    "My bank changed, new IBAN: ⟦iban|gen:DE|spaced⟧.",
    "Could you pay the reimbursement to ⟦iban|gen:IT|plain⟧?",
    "Überweisung bitte auf ⟦iban|gen:DE|plain⟧, thanks - I'm in Munich.",
    "IBAN ⟦iban|gen:ES|plain⟧ (BBVA). Amount 45,90 EUR.",
    "Wire it to ⟦iban|gen:FR|spaced⟧ and send the confirmation to ⟦email|claire.d@orange.fr⟧.",
    "Our company account for the return is ⟦iban|gen:BE|spaced⟧.",
    "Please refund to bank account ⟦bank_account|000123456789⟧ (routing 011000015).",
    "account number: ⟦bank_account|12345678⟧, sort code 40-47-84",
    "开户行：招商银行，账号：⟦bank_account|755912345610801⟧",
    "银行账户⟦bank_account|4367 4200 1234 5678 901⟧，请核对。",
    "My new mobile is ⟦phone|+1 312 555 0144⟧; the landline ⟦phone|(312) 555-0190⟧ is gone.",
    "Ring ⟦phone|+44 (0)161 496 0012⟧ and ask for Sam.",
    "UK mobile ⟦phone|+447700900456⟧, text before calling please.",
    "Delivery contact: ⟦phone|+65 9123 4567⟧ (Singapore).",
    "这是我朋友的号码⟦phone|13245678901⟧，他帮我收货。",
    "号码⟦phone|147 1234 5678⟧收不到短信，换成⟦phone|166 0000 9999⟧吧。",
    "电话：⟦phone|（021）64871234⟧，找李老师。",
    "打⟦phone|+86-10-65529988⟧也可以，那是我们公司前台。",
    "寄件人电话⟦phone|15112345678⟧，收件人电话⟦phone|15187654321⟧。",
    "my phone ⟦phone|13688889999⟧ (China), email ⟦email|nick.y@gmail.com⟧",
    "Write to ⟦email|support-escalations@acme-retail.io⟧ if you can't help.",
    "I also have ⟦email|bob.smith_77@aol.com⟧, maybe the order is on that one.",
    "邮件发⟦email|service@lianhua-store.cn⟧没人回。",
    "新邮箱⟦email|yuki.tanaka@docomo.ne.jp⟧，旧的⟦email|yuki_t@yahoo.co.jp⟧不用了。",
    "Ship to ⟦address|1 Infinite Loop, Cupertino, CA 95014⟧.",
    "The address on file, ⟦address|350 Fifth Avenue, New York, NY 10118⟧, is my office.",
    "Please redirect to ⟦address|44 Station Road, Unit 7, Leeds LS1 4DY⟧.",
    "Our warehouse is at ⟦address|2500 Harbor Blvd, Costa Mesa, CA 92626⟧.",
    "地址：⟦address|北京市海淀区中关村大街27号1101室⟧，工作日送。",
    "新地址是⟦address|湖南省长沙市岳麓区麓山南路932号⟧",
    "请送到⟦address|福建省厦门市思明区思明南路422号⟧门口的快递柜。",
    "送货地址⟦address|沈阳市和平区南京北街206号⟧，联系⟦phone|13940001234⟧。",
    "身份证：⟦cn_id|gen⟧ 手机：⟦phone|13566667777⟧ 地址：⟦address|杭州市滨江区网商路699号⟧",
    "证件⟦cn_id|genX⟧已上传，为什么还显示未认证",
    "Recipient ID ⟦cn_id|gen⟧, recipient phone ⟦phone|+86 13811112222⟧.",
    "身份证号 ⟦cn_id|gen⟧，这个号码我确认过没错。",
    "我再发一遍：⟦cn_id|gen⟧",
    "IBAN: ⟦iban|gen:GB|plain⟧",
    "the IBAN is ⟦iban|gen:CH|plain⟧ and the BIC is UBSWCHZH80A",
    "Refund IBAN ⟦iban|gen:NL|spaced⟧, name on account: de Vries.",
    "Bitte auf ⟦iban|gen:DE|spaced⟧ erstatten.",
    "退款账户IBAN ⟦iban|gen:FR|plain⟧，我在巴黎。",
    "Two cards: ⟦card|gen:unionpay16|space⟧ and ⟦card|gen:visa|dash⟧; refund the second.",
    # ---- placeholders typed by the customer, labelled numbers next to phones ----
    "Why does my confirmation say [PHONE_1] instead of my number ⟦phone|(415) 555-0134⟧?",
    "短信里显示[EMAIL_1]，我的邮箱其实是⟦email|hu.lei@qq.com⟧",
    "Order 13912345678 was placed with phone ⟦phone|13812345678⟧.",
    "订单号13912345678，收件人电话⟦phone|13712345678⟧，一直没发货",
    "tracking no. 13800138000 shows delivered but nobody called ⟦phone|13900139000⟧",
    "运单号：SF1234567890123，联系电话⟦phone|13622223333⟧",
    "Invoice number 2024031500123 is wrong, please resend to ⟦email|ap@globex.example.com⟧",
    # ---- negatives only ----
    "Where is my order 13912345678? It has been a week.",
    "订单号 13912345678 什么时候发货？",
    "订单号：15800001111，请帮我查一下物流",
    "My tracking number is 13812345678, the site says label created only.",
    "运单号是 13700137000，显示已签收但我没收到",
    "快递单号 18611112222 查不到信息",
    "Invoice no. 13500135000 has the wrong VAT number.",
    "Order #15912345678 arrived damaged, can I get a replacement?",
    "物流单号773012345678901一直没更新",
    "order id: 18888888888 - can I change the size?",
    "I ordered 2 pairs on 2024-05-12 and paid $129.99, only 1 arrived.",
    "2024年5月12日下的单，付了¥1388，到现在还没发货。",
    "The timestamp on the error is 1716543210 and the code is E-4031.",
    "Error at 2024-05-12T14:33:09Z, request id 7f3a9c12, page showed 500.",
    "Product code SKU-13912345678 is out of stock, when will it be back?",
    "货号 20240512001 的衣服还有XL吗？",
    "I need 12 units of model 4400-2210 for the office.",
    "The price went from 1,299.00 to 1,599.00 overnight, why?",
    "买了3件，每件299元，一共897元，优惠券没用上。",
    "Your hotline 400-820-8820 never picks up.",
    "Call 911 if it's an emergency, I know, but this is about a refund.",
    "The box says batch 20231108 and best before 2025-11-08.",
    "Ref 4111 1111 1111 1112 is what the system showed me, whatever that means.",
    "我把 ⟨bad:card⟩ 输错了一位，页面就报错了",
    "The number on the voucher is ⟨bad:card⟩, it says invalid.",
    "Gift card code ⟨bad:card_space⟩ doesn't work at checkout.",
    "这个编号 ⟨bad:cn_id⟩ 是什么意思？出现在我的包裹标签上",
    "The reference ⟨bad:iban⟩ appeared on my statement, is that you?",
    "Membership no. 620000123456 — do I still get the discount?",
    "会员卡号 8800123456，积分怎么没到账？",
    "I'm 34, ordered size 42 shoes, received size 44.",
    "Meeting at 10:30-11:45, I'll check the parcel after 6pm.",
    "Version 13.9.1 of the app crashes on checkout.",
    "IMEI 356938035643809 — is this phone covered by warranty?",
    "Serial number SN2023110812345 on the back of the device.",
    "It weighs 1.38 kg and the box is 30x20x15 cm.",
    "Coupon SAVE20-2024 didn't apply to order 1029384756.",
    "我在3号楼门口等了20分钟，快递员没来。",
    "第2件半价是真的吗？我买了5件。",
    "订单编号202405121234567890，申请退款。",
    "发票号码 04403220 的发票抬头写错了",
    "工单号 13812340000 还没有人处理",
    "The flight was CA1831 on 12/05, the bag tag is 0999123456.",
    "My zip code is 94107 and the store number is 2210.",
    "Room 1201 at the hotel, check-in 15:00, booking ref 139123456.",
    "I paid with card ending in 4242, the last four digits.",
    "The package weighed 13.8 pounds and cost 138.00 to ship.",
    "Please send the parcel to the pick-up locker near me, I'm never home.",
    "Email me the tracking link, I don't want calls.",
    "UPS tracking 1Z999AA10123456784 says out for delivery.",
    "Dates on the receipt: 20240512 and 20231231, which one counts for the warranty?",
    "订单 230512000123456789 显示已取消，但钱没退。",
    "The order total was 13,912.34 MXN for 18 items.",
    "Shipment ID 4006001234567 is stuck in customs.",
    "快递员工号 13800 说明天送。",
    "",
    "谢谢，问题解决了！",
    "My order number is 4111111111111111, please check it.",
    "订单号 ⟨bad:card⟩ 的包裹破损了",
]


# --- assembly ----------------------------------------------------------------------------------

ENTITY = re.compile(r"⟦(\w+)\|([^⟧]+)⟧|⟨bad:(\w+)⟩")


def render(message: str) -> dict[str, object]:
    text = ""
    entities: list[dict[str, object]] = []
    pos = 0
    for match in ENTITY.finditer(message):
        text += message[pos : match.start()]
        pos = match.end()
        if match.group(3):
            text += bad(match.group(3))
            continue
        kind, spec = match.group(1), match.group(2)
        if spec.startswith("gen"):
            value = generated(kind, spec)
        else:
            value = spec
        entities.append({"type": kind, "start": len(text), "end": len(text) + len(value)})
        text += value
    text += message[pos:]
    return {"text": text, "entities": entities}


def generated(kind: str, spec: str) -> str:
    parts = spec.split("|")
    if kind == "card":
        brand = parts[0].split(":")[1]
        return group(card_number(brand), parts[1])
    if kind == "cn_id":
        return cn_id(want_x=parts[0] == "genX")
    if kind == "iban":
        value = iban(parts[0].split(":")[1])
        return spaced(value) if len(parts) > 1 and parts[1] == "spaced" else value
    raise ValueError(f"nothing generates {kind}")


def build() -> list[dict[str, object]]:
    rows = []
    for message in MESSAGES:
        # the full-width example is written full-width on purpose; spans count characters
        rows.append(render(message))
    return rows


def main() -> None:
    rows = build()
    out = HERE / "masking_labelled.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        for entity in row["entities"]:  # type: ignore[attr-defined]
            counts[entity["type"]] = counts.get(entity["type"], 0) + 1
    total = sum(counts.values())
    print(f"wrote {out}: {len(rows)} messages, {total} entities {counts}")


if __name__ == "__main__":
    main()
