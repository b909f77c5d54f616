"""Chinese support words glossed in English, for an English-centric sentence embedder.

WordLlama's tokenizer splits most Chinese characters into bytes, so its vectors hardly know that
运费 and 邮费 are both the shipping fee, or that 快递到哪了 asks what "where is my parcel" asks.
Before a text is embedded, :func:`gloss` replaces the Chinese words of a glossary of common
customer-service vocabulary (orders, delivery, returns, refunds, payment, invoices, accounts,
membership, coupons, questions words) by their English meaning, longest word first; characters
the glossary does not know stay as they are, and grammatical particles (的, 了, 吗, ...) go.

The glossary is a translator's word list for e-commerce and banking support, written by hand and
not learned from any evaluation set; near synonyms share a gloss (运费 / 邮费 / 快递费:
"shipping fee"). It changes only what is embedded: the guards (entities, negation, direction,
minimal pairs) read the original text. Bump ``GLOSS_VERSION`` when the list changes: it is part
of the embedder's name, so models and cache entries made with another list are not mixed.
"""

from __future__ import annotations

import re

__all__ = ["GLOSS_VERSION", "gloss"]

GLOSS_VERSION = "zh-en-1"

# English meaning → the Chinese words that have it. Several words per meaning are what makes
# paraphrases meet; a word belongs to one meaning only.
_GLOSSARY: dict[str, tuple[str, ...]] = {
    # question words
    "when": ("什么时候", "啥时候", "几时", "何时", "哪天", "多会儿"),
    "how long": ("多久", "多长时间", "多少天", "几天", "要多久", "多长"),
    "how": ("怎么", "怎样", "如何", "咋", "怎么样", "如何才能", "怎么才能"),
    "what should I do": ("怎么办", "咋办", "怎么处理", "如何处理", "该怎么办", "怎么解决"),
    "why": ("为什么", "为啥", "怎么回事", "什么原因", "何故"),
    "where": ("哪里", "哪儿", "在哪", "到哪", "何处"),
    "how much": ("多少钱", "多少", "几块钱"),
    "what": ("什么", "啥", "哪些", "哪个"),
    "can I": ("可以", "能不能", "能否", "可不可以", "可否", "能够", "是否可以", "行不行"),
    "is there": ("有没有", "是否有"),
    "please": ("请问", "请", "麻烦", "劳驾"),
    "help me": ("帮我", "帮忙", "帮助", "协助"),
    "I": ("我", "本人"),
    "you": ("你们", "您", "你", "贵店", "商家", "卖家", "店家"),
    "want": ("想要", "想", "要", "希望", "打算"),
    "need": ("需要", "得"),
    "tell me": ("告诉", "说一下", "问一下", "咨询"),
    # orders and items
    "order": ("订单", "单子", "订单号", "这单", "那单"),
    "buy": ("购买", "买", "下单", "拍下", "购物", "选购", "订购"),
    "item": ("商品", "东西", "物品", "宝贝", "货物", "产品", "货"),
    "stock": ("库存", "有货", "现货", "缺货", "补货"),
    "size": ("尺码", "尺寸", "码数", "大小", "码"),
    "fit": ("合适", "合身"),
    "color": ("颜色", "色"),
    "price": ("价格", "价钱", "售价", "原价"),
    "price difference": ("差价", "价差", "保价"),
    "price drop": ("降价", "便宜了"),
    "price rise": ("涨价", "贵了"),
    "discount": ("优惠", "折扣", "打折", "促销", "活动", "满减"),
    "coupon": ("优惠券", "代金券", "折扣券", "优惠码", "红包", "券"),
    "use": ("使用", "用"),
    # shipping
    "ship": ("发货", "发出", "寄出", "出库", "发走", "发"),
    "deliver": ("配送", "送货", "派送", "运送", "送到", "寄到", "寄", "送"),
    "parcel": ("快递", "包裹", "快件", "物流", "邮件"),
    "tracking": ("物流信息", "快递信息", "运单号", "单号", "追踪", "跟踪"),
    "arrive": ("送达", "到货", "到达", "到了", "收到", "签收", "寄达"),
    "shipping fee": ("运费", "邮费", "快递费", "配送费", "运输费"),
    "free shipping": ("包邮", "免运费", "免邮"),
    "shipping insurance": ("运费险",),
    "address": ("地址", "收货地址", "住址"),
    "abroad": ("国外", "海外", "国际", "境外"),
    "lost": ("丢了", "丢失", "弄丢", "丢件", "遗失"),
    "late": ("延迟", "延误", "太慢", "很慢", "慢"),
    "courier": ("快递员", "快递小哥", "配送员", "送货员"),
    # returns, refunds
    "return": ("退货", "退回", "寄回", "退掉", "退还"),
    "exchange": ("换货", "调换", "更换", "换"),
    "return or exchange": ("退换", "退换货"),
    "no reason return": ("无理由",),
    "refund": ("退款", "退钱", "退费", "返款"),
    "money": ("钱", "款", "金额", "费用"),
    "credited": ("到账", "入账", "退回来", "返还"),
    "apply": ("申请", "提交", "办理"),
    "steps": ("操作", "流程", "步骤", "手续"),
    "cancel": ("取消", "撤销", "撤回"),
    "change": ("修改", "更改", "变更", "改"),
    "wrong": ("写错", "填错", "错了", "错误", "不对", "有误"),
    "failed": ("失败", "不成功"),
    "broken": ("坏了", "损坏", "破损", "坏", "碎了", "烂了"),
    "defect": ("质量问题", "质量", "瑕疵", "次品", "残次"),
    "problem": ("问题", "故障", "毛病"),
    "repair": ("维修", "修理", "保修", "修"),
    "warranty": ("质保", "三包", "售后"),
    "claim": ("理赔", "索赔", "赔偿", "赔"),
    "insurance": ("保险",),
    # payment, invoices
    "pay": ("付款", "支付", "付钱", "结账", "买单", "付"),
    "cash on delivery": ("货到付款",),
    "payment method": ("支付方式", "付款方式"),
    "installments": ("分期", "分期付款"),
    "card": ("银行卡", "信用卡", "储蓄卡", "卡"),
    "invoice": ("发票", "开票", "专票", "普票", "收据"),
    "issue": ("开具", "开出", "开"),
    "charge": ("扣款", "扣费", "收费", "扣钱", "手续费"),
    "balance": ("余额",),
    "top up": ("充值",),
    "withdraw": ("提现", "取现", "取钱"),
    "transfer": ("转账", "汇款"),
    # account and membership
    "account": ("账号", "账户", "帐号", "帐户", "用户名"),
    "password": ("密码",),
    "log in": ("登录", "登陆"),
    "register": ("注册",),
    "close account": ("注销",),
    "phone number": ("手机号", "手机号码", "电话号码", "电话", "手机"),
    "email": ("邮箱", "电子邮件"),
    "verification code": ("验证码",),
    "link": ("绑定", "关联"),
    "unlink": ("解绑", "解除绑定"),
    "membership": ("会员", "vip"),
    "benefits": ("权益", "好处", "福利", "特权", "优势"),
    "points": ("积分",),
    "subscription": ("订阅",),
    "renewal": ("续费", "续订", "自动续费"),
    "activate": ("开通", "开启", "激活", "启用"),
    "turn off": ("关闭", "停用"),
    "unsubscribe": ("退订",),
    "restore": ("恢复",),
    "freeze": ("冻结", "锁定"),
    "unfreeze": ("解冻", "解锁"),
    # people and contact
    "human agent": ("人工客服", "人工", "真人", "客服人员", "工作人员"),
    "customer service": ("客服", "售后服务"),
    "contact": ("联系", "找", "转接", "接通", "沟通"),
    "complain": ("投诉", "举报", "差评"),
    "praise": ("表扬", "好评", "夸奖"),
    # time and status
    "time": ("时间", "时候"),
    "day": ("天", "日"),
    "business day": ("工作日",),
    "today": ("今天",),
    "status": ("状态", "进度", "情况"),
    "information": ("信息", "资料", "详情"),
    "check": ("查询", "查看", "查一下", "查", "看看", "看一下"),
    "rule": ("规则", "政策", "规定", "条件"),
    "again": ("重新", "再次"),
}

# Grammatical particles and fillers: no meaning an English embedder could use.
_PARTICLES = re.compile(r"[的了吗呢吧啊呀嘛么哦哈之着过地]")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _meanings() -> dict[str, str]:
    meaning: dict[str, str] = {}
    for english, words in _GLOSSARY.items():
        for word in words:
            if word in meaning:
                raise ValueError(f"gloss.py: {word!r} means {meaning[word]!r} and {english!r}")
            meaning[word] = english
    return meaning


_MEANING = _meanings()
_LONGEST = max(len(w) for w in _MEANING)


def gloss(text: str) -> str:
    """``text`` with the glossary's Chinese words in English (text without Chinese: as is)."""
    if not _CJK.search(text):
        return text
    text = text.lower()
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        # Forward maximum matching: the longest glossary word starting here (a dictionary
        # lookup per length: ten times faster than one regular expression of every word).
        for size in range(min(_LONGEST, n - i), 0, -1):
            english = _MEANING.get(text[i : i + size])
            if english is not None:
                out.append(f" {english} ")
                i += size
                break
        else:
            out.append(" " if _PARTICLES.match(text[i]) else text[i])
            i += 1
    return " ".join("".join(out).split())
