"""Script-aware normalisation: tokens, punctuation and chrome lines in real text of each script,
and the Urdu false merge it prevents."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, StoredEntry
from aggregator.outputs.dedupe import DedupeSettings, fingerprint, group, resemblance, story_text
from aggregator.outputs.textnorm import (
    has_sentence_punctuation,
    is_chrome,
    is_stamp,
    normalise,
    tokens,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# One punctuated sentence of running text per script (none of them uses . , ! ? except Korean).
SENTENCES = {
    "ur": "لاہور میں شدید بارش کے بعد کئی سڑکیں زیر آب آ گئیں، اور شہریوں کو مشکلات کا سامنا رہا۔",
    "ar": "أعلنت وزارة الصحة يوم الثلاثاء عن افتتاح مستشفى جديد في مدينة صفاقس، بسعة مئتي سرير.",
    "hi": "दिल्ली में मंगलवार को हुई बारिश से कई सड़कों पर पानी भर गया और यातायात धीमा रहा।",
    "zh": "周二下午，成都市区突降暴雨，多条道路积水严重，部分公交线路临时停运。",
    "ja": "火曜日の午後、札幌市内で大雨が降り、一部の道路が冠水して通行止めとなった。",
    "ko": "화요일 오후 부산 시내에 폭우가 쏟아져 일부 도로가 물에 잠기고 통행이 통제됐다.",
    "th": "ฝนตกหนักในเชียงใหม่เมื่อบ่ายวันอังคาร ทำให้ถนนหลายสายมีน้ำท่วมขังและการจราจรติดขัด",
}
# Menus of the same sites: many items, no punctuation. Chrome removal must drop these.
MENUS = {
    "ur": "صفحہ اول پاکستان دنیا کاروبار کھیل تفریح صحت سائنس ٹیکنالوجی ویڈیو تصاویر کالم",
    "ar": "الرئيسية أخبار محلية عربي ودولي اقتصاد رياضة ثقافة منوعات صحة تكنولوجيا فيديو",
    "hi": "होम देश विदेश राज्य शहर मनोरंजन खेल क्रिकेट बिज़नेस टेक्नोलॉजी लाइफस्टाइल धर्म",
    "zh": "首页 国内 国际 财经 科技 体育 娱乐 汽车 房产 教育 健康 旅游",
    "ja": "トップ 国内 国際 経済 エンタメ スポーツ IT 科学 ライフ 地域 動画 写真",
    "ko": "홈 정치 경제 사회 국제 문화 연예 스포츠 IT 과학 오피니언 포토",
    "th": "หน้าแรก ข่าวด่วน การเมือง เศรษฐกิจ ต่างประเทศ กีฬา บันเทิง ไลฟ์สไตล์ เทคโนโลยี ภูมิภาค วิดีโอ ภาพข่าว",
}


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_running_text_is_never_chrome(code: str) -> None:
    line = normalise(SENTENCES[code])
    assert not is_chrome(line)
    # Repeated to any length, running text stays text (Thai: no punctuation at all).
    assert not is_chrome(" ".join([line] * 5))


@pytest.mark.parametrize("code", sorted(MENUS))
def test_menus_are_chrome_in_every_script(code: str) -> None:
    assert is_chrome(normalise(MENUS[code]))


@pytest.mark.parametrize(
    ("line", "punctuated"),
    [
        ("کراچی میں بارش۔", True),  # Urdu full stop
        ("کیا بارش ہوگی؟", True),  # Arabic question mark
        ("لاہور، کراچی", True),  # Arabic comma
        ("बारिश हुई।", True),  # Devanagari danda
        ("雨が降った。", True),
        ("成都，重庆", True),
        ("「無責任だ」", True),
        ("Home / World · Sport | Culture – News", False),  # separators only
        ("首页 国内 国际", False),
    ],
)
def test_sentence_punctuation_of_every_script(line: str, punctuated: bool) -> None:
    assert has_sentence_punctuation(line) is punctuated


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("لاہور میں بارش", ["لاہور", "میں", "بارش"]),
        ("हिन्दी समाचार", ["हिन्दी", "समाचार"]),  # vowel signs stay inside their words
        ("정부는 오늘 발표했다.", ["정부는", "오늘", "발표했다"]),
        ("成都暴雨", ["成都", "都暴", "暴雨"]),  # Chinese: overlapping character pairs
        ("大雨が降る", ["大雨", "雨が", "が降", "降る"]),
        ("ฝนตกหนัก", ["ฝนต", "นตก", "ตกห", "กหนั", "หนัก"]),  # Thai: letter triples, marks kept
        ("Sydney 2024: rain", ["sydney", "2024", "rain"]),
    ],
)
def test_tokens_by_script(text: str, expected: list[str]) -> None:
    assert tokens(normalise(text)) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("٢٠٢٤", "2024"),  # Arabic-Indic digits
        ("۲۰۲۴", "2024"),  # Extended Arabic-Indic (Urdu, Persian)
        ("२०२४", "2024"),  # Devanagari
        ("๒๕๖๗", "2567"),  # Thai
        ("２０２４ＮＥＷＳ", "2024news"),  # full-width
        ("ﾆｭｰｽ", "ニュース"),  # half-width katakana
        ("مُحَمَّد", "محمد"),  # optional Arabic vowel marks
        ("كتاب علي", "کتاب علی"),  # Arabic kaf and yeh as Urdu/Persian spell them
        ("أحمد", "احمد"),  # alef with hamza
        ("می‌روم", "میروم"),  # zero-width non-joiner
    ],
)
def test_normalise_unifies_spellings(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize(
    "line",
    [
        "2024年5月1日 12:30",
        "١ مايو ٢٠٢٤، ١٢:٣٠",
        "2024년 5월 1일 오후 3시 20분",
        "1 พ.ค. 2567 12:30 น.",
    ],
)
def test_date_stamps_in_every_script(line: str) -> None:
    assert is_stamp(normalise(line))


def test_short_lines_with_numbers_are_not_stamps() -> None:
    assert not is_stamp(normalise("12人死亡"))
    assert not is_stamp(normalise("In 2023, 1200 people died in the floods"))


@given(st.text(max_size=200))
def test_tokens_are_letters_marks_and_digits_only(text: str) -> None:
    for token in tokens(normalise(text)):
        assert token
        assert all(unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Cn"
                   for c in token)  # fmt: skip


# --- the Urdu case of the issue --------------------------------------------------------------

URDU_CHROME_TOP = (
    "<nav>صفحہ اول پاکستان دنیا کاروبار کھیل تفریح صحت سائنس ٹیکنالوجی ویڈیو تصاویر کالم بلاگ</nav>"
    "<div>فیس بک پر شیئر کریں ٹویٹر پر شیئر کریں واٹس ایپ پر بھیجیں ای میل کریں پرنٹ کریں</div>"
)
URDU_CHROME_BOTTOM = "<p>جملہ حقوق محفوظ ہیں۔ روزنامہ مثال، لاہور۔</p>"
URDU_FLOODS = (
    "<p>پیر کو ہونے والی موسلا دھار بارش سے لاہور کے بڑے حصے زیر آب آ گئے اور تقریباً بیس ہزار "
    "افراد کو اپنے گھر چھوڑنا پڑے۔ ضلعی انتظامیہ کے مطابق نشیبی علاقوں میں پانی کی سطح اب بھی "
    "بلند ہے، اور امدادی کیمپ قائم کر دیے گئے ہیں۔</p>"
    "<p>ریسکیو اہلکاروں نے کشتیوں کے ذریعے پھنسے ہوئے خاندانوں کو محفوظ مقامات پر منتقل کیا۔ "
    "محکمہ موسمیات نے آئندہ تین دنوں میں مزید بارش کی پیش گوئی کی ہے؟ شہریوں کو غیر ضروری سفر "
    "سے گریز کی ہدایت کی گئی ہے۔</p>"
)
URDU_CRICKET = (
    "<p>قومی کرکٹ ٹیم نے ملتان میں کھیلے گئے دوسرے ٹیسٹ میچ میں مہمان ٹیم کو سات وکٹوں سے شکست "
    "دے کر سیریز اپنے نام کر لی۔ کپتان نے فتح کا سہرا نوجوان بولرز کے سر باندھا، جنہوں نے آخری "
    "دن شاندار کارکردگی دکھائی۔</p>"
    "<p>میچ کے بہترین کھلاڑی کا اعزاز اوپنر کو ملا، جنہوں نے دونوں اننگز میں نصف سنچریاں بنائیں۔ "
    "اگلا میچ اگلے ماہ کراچی میں کھیلا جائے گا، اور ٹکٹوں کی فروخت جمعہ سے شروع ہو گی۔</p>"
)


def _stored(feed: str, title: str, content: str, link: str) -> StoredEntry:
    parsed = ParsedEntry(
        guid=None,
        guid_is_permalink=False,
        link=link,
        title=title,
        summary="",
        content=content,
        author="",
        categories=(),
        published=T0,
        updated=None,
    )
    [entry] = identify(feed, [parsed], T0)
    return StoredEntry(entry, T0, T0, feed, f"https://{feed}.example/feed", None)


def test_urdu_body_survives_chrome_removal() -> None:
    text = story_text("لاہور میں سیلاب", "", URDU_CHROME_TOP + URDU_FLOODS + URDU_CHROME_BOTTOM)
    assert "موسلا دھار بارش" in text
    assert "مزید بارش کی پیش گوئی" in text
    assert "صفحہ اول" not in text and "شیئر کریں" not in text  # the menu and the share row
    assert len(text.split()) > 60


def test_two_urdu_articles_in_the_same_chrome_are_not_merged() -> None:
    a = _stored("site-home", "لاہور میں سیلاب", URDU_CHROME_TOP + URDU_FLOODS + URDU_CHROME_BOTTOM,
                "https://misal.example/a")  # fmt: skip
    b = _stored("site-sport", "سیریز پاکستان کے نام", URDU_CHROME_TOP + URDU_CRICKET
                + URDU_CHROME_BOTTOM, "https://misal.example/b")  # fmt: skip
    fa, fb = fingerprint(a), fingerprint(b)
    assert fa is not None and fb is not None
    assert resemblance(fa, fb) < 0.2  # was 0.75 when only the chrome was left of both
    assert len(group([a, b], DedupeSettings("near"))) == 2


def test_one_urdu_story_under_two_sites_chrome_is_merged() -> None:
    a = _stored("site-a", "لاہور میں سیلاب", URDU_CHROME_TOP + URDU_FLOODS + URDU_CHROME_BOTTOM,
                "https://misal.example/a")  # fmt: skip
    other_chrome = "<div>ہوم / پاکستان / لاہور</div><p>۲ مئی ۲۰۲۴، ۱۰:۳۰</p>"
    b = _stored("site-b", "سیلاب نے لاہور کو ڈبو دیا", other_chrome + URDU_FLOODS,
                "https://akhbar.example/x")  # fmt: skip
    assert len(group([a, b], DedupeSettings("near"))) == 1
