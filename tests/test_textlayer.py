"""The text-layer fast path: extraction from real PDFs built in the test, the
trustworthiness verdict, and the light Markdown formatting."""

from __future__ import annotations

import random

import pypdfium2 as pdfium
import pytest

from qwenocr.pages import textlayer
from qwenocr.pages.textlayer import assess, extract, read_page, to_markdown
from tests.support import textlayer_pdfs as pdfs


def _page(data: bytes, index: int = 0):
    # Keep the document alive as long as the page (PDFium frees pages with it).
    doc = pdfium.PdfDocument(data)
    return doc, doc[index]


def _verdict(data: bytes, index: int = 0):
    doc, page = _page(data, index)
    page_text, verdict = read_page(page)
    return page_text, verdict


# --- real PDFs ---------------------------------------------------------------------


def test_born_digital_page_is_usable():
    page_text, verdict = _verdict(pdfs.born_digital_pdf())
    assert verdict.usable, verdict.reason
    assert not verdict.ocr_layer
    assert verdict.chars > 2000
    assert "thirty days after signature" in page_text.text
    assert page_text.image_fraction == 0
    assert (page_text.width, page_text.height) == pdfs.LETTER
    assert len(page_text.boxes) == 40  # one segment per drawn line


def test_image_only_page_has_no_text():
    page_text, verdict = _verdict(pdfs.image_only_pdf())
    assert not verdict.usable
    assert verdict.reason == "no text layer"
    assert verdict.chars == 0
    assert page_text.image_fraction > 0.95


def test_stamp_on_a_scan_is_not_the_page():
    page_text, verdict = _verdict(pdfs.stamped_scan_pdf())
    assert not verdict.usable
    assert "too little text" in verdict.reason or "covers only part" in verdict.reason
    assert verdict.chars > 0


def test_long_stamp_on_a_scan_fails_coverage():
    # Enough characters for the page, but all on one footer line: coverage must catch it.
    _, verdict = _verdict(pdfs.stamped_scan_pdf("Received by fax " * 12))
    assert not verdict.usable
    assert "covers only part of the page" in verdict.reason


def test_private_use_text_layer_is_garbled():
    page_text, verdict = _verdict(pdfs.garbled_pdf("E020"))
    assert any(0xE000 <= ord(ch) <= 0xF8FF for ch in page_text.text)  # the PDF really is broken
    assert not verdict.usable
    assert "garbled" in verdict.reason and "private-use" in verdict.reason


def test_control_character_text_layer_is_garbled():
    _, verdict = _verdict(pdfs.garbled_pdf("0001"))
    assert not verdict.usable
    assert "garbled" in verdict.reason


def test_glyph_soup_text_layer_is_garbled():
    page_text, verdict = _verdict(pdfs.soup_pdf())
    assert verdict.chars > 1000
    assert not verdict.usable, verdict.reason
    assert "garbled" in verdict.reason


def test_earlier_ocr_layer_over_a_scan_is_usable_and_flagged():
    _, verdict = _verdict(pdfs.ocr_layer_pdf())
    assert verdict.usable, verdict.reason
    assert verdict.ocr_layer
    assert "earlier OCR layer" in verdict.reason


def test_short_page_without_graphics_is_usable():
    # A title page: little text, but nothing else on the page that the model could read.
    _, verdict = _verdict(pdfs.title_page_pdf())
    assert verdict.usable, verdict.reason


def test_mixed_document_page_by_page():
    doc = pdfium.PdfDocument(pdfs.mixed_pdf())
    usable = [read_page(doc[i])[1].usable for i in range(len(doc))]
    assert usable == [True, False, False, False]


def test_extract_accepts_an_open_page_and_leaves_it_usable():
    doc, page = _page(pdfs.born_digital_pdf())
    first = extract(page)
    second = extract(page)  # the text page is closed each time, the page is not
    assert first == second
    assert page.render(scale=0.2).to_pil().size[0] > 0


def test_document_hands_out_its_text_layer_and_an_image_has_none(tmp_path):
    """The scan reads a page's text layer through its Document, never through PDFium."""
    from qwenocr.pages.document import open_document
    from tests.support import samples

    pdf = tmp_path / "mixed.pdf"
    pdf.write_bytes(pdfs.mixed_pdf())
    raw = pdfium.PdfDocument(pdfs.mixed_pdf())
    with open_document(pdf) as document:
        layers = [document.text_layer(number) for number in range(1, document.page_count + 1)]
    assert layers == [read_page(raw[index])[0] for index in range(len(raw))]
    image = tmp_path / "scan.png"
    samples.page_image(1).save(image)
    with open_document(image) as document:
        assert document.text_layer(1) is None


# --- assess on strings ---------------------------------------------------------------

ENGLISH = " ".join(pdfs.body_lines(30))
FULL_PAGE_BOXES = [(60, 780 - 16 * i, 540, 790 - 16 * i) for i in range(45)]


def _ok(text: str, boxes=FULL_PAGE_BOXES, **kw):
    return assess(text, 612, 792, boxes, **kw)


@pytest.mark.parametrize(
    "text",
    [
        ENGLISH,
        # German, French, Polish, Icelandic, Vietnamese: accents are not garbage
        "Die Vertragsparteien vereinbaren, dass die Lieferungen spätestens dreißig Tage nach "
        "Unterzeichnung erfolgen müssen und Verzögerungen schriftlich anzuzeigen sind. " * 8,
        "Les parties conviennent que les livrables décrits à l'annexe A seront fournis au plus "
        "tard trente jours après la signature, et que tout retard doit être notifié par écrit. " * 8,
        "Strony uzgadniają, że świadczenia opisane w załączniku zostaną dostarczone nie później "
        "niż trzydzieści dni po podpisaniu, a każde opóźnienie zgłoszone na piśmie. " * 8,
        "Aðilar eru sammála um að afhending skuli fara fram eigi síðar en þrjátíu dögum eftir "
        "undirritun og að tilkynna skuli um tafir skriflega. " * 8,
        "Các bên đồng ý rằng sản phẩm sẽ được giao không muộn hơn ba mươi ngày sau khi ký kết "
        "và mọi sự chậm trễ phải được thông báo bằng văn bản. " * 8,
        # Cyrillic, Greek, Chinese, Japanese, Arabic, Hindi (combining vowel signs), Thai
        "Стороны соглашаются, что результаты работ будут предоставлены не позднее тридцати дней "
        "после подписания, а о любой задержке необходимо уведомить письменно. " * 8,
        "Τα μέρη συμφωνούν ότι τα παραδοτέα θα παρασχεθούν το αργότερο τριάντα ημέρες μετά την "
        "υπογραφή και ότι κάθε καθυστέρηση πρέπει να γνωστοποιείται γραπτώς. " * 8,
        "双方同意，附件A所述的交付成果应在签署后三十天内提供，任何延误必须以书面形式通知。" * 8,
        "当事者は、別紙Aに記載された成果物を署名後30日以内に提供し、遅延はPDFファイルで書面通知することに合意する。"
        * 8,
        "يتفق الطرفان على تقديم المخرجات الموضحة في الملحق أ في موعد لا يتجاوز ثلاثين يوما من التوقيع. " * 8,
        "पक्षकार सहमत हैं कि अनुसूची में वर्णित सामग्री हस्ताक्षर के तीस दिनों के भीतर दी जाएगी। " * 8,
        "คู่สัญญาตกลงว่าจะส่งมอบงานภายในสามสิบวันหลังจากลงนาม และต้องแจ้งความล่าช้าเป็นลายลักษณ์อักษร " * 8,
    ],
    ids=["en", "de", "fr", "pl", "is", "vi", "ru", "el", "zh", "ja", "ar", "hi", "th"],
)
def test_real_text_in_many_scripts_is_usable(text):
    verdict = _ok(text)
    assert verdict.usable, verdict.reason


def test_table_of_contents_with_dot_leaders_is_usable():
    toc = "\n".join(f"{i}. Chapter title number {i} " + "." * 60 + f" {i * 7}" for i in range(1, 30))
    assert _ok(toc).usable, _ok(toc).reason


def test_financial_table_is_usable():
    rng = random.Random(1)
    rows = "\n".join(
        f"Account {i:04d}  ${rng.randint(1, 99):,}{rng.randint(100, 999)}.{rng.randint(10, 99)}  "
        f"({rng.randint(1, 9)}.{rng.randint(0, 9)}%)  2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        for i in range(40)
    )
    assert _ok(rows).usable, _ok(rows).reason


def test_form_with_blanks_and_a_few_symbol_bullets_is_usable():
    form = "\n".join(f"\uf0b7 Field number {i} of the application form: ____________________" for i in range(35))
    assert _ok(form).usable, _ok(form).reason


@pytest.mark.parametrize(
    "text, word",
    [
        ("(cid:12)(cid:45)(cid:7)(cid:88) " * 80, "cid"),
        (" ".join(f"g{i} g{i + 3} g{i + 7}" for i in range(200)), "glyph names"),
        ("\ufffd" * 300, "replacement"),
        ("".join(chr(0xE000 + i % 200) for i in range(800)), "private-use"),
        ("\x03\x11\x05\x07 \x0e\x10 " * 100, "control"),
        # glyph ids landing in Latin-1: letters, but not from any language
        ("ÐçÞÿ þÐçØæ ÆþÞð ÿýþ ØÐæ " * 60, "unusual Latin letters"),
        # a Caesar-shifted font: no vowels where words should have them
        ("Wkh sduwlhv djuhh wkdw wkh gholyhudeohv vkdoo eh surylghg qr odwhu wkdq wkluwb gdbv " * 12, "vowel"),
        # words lost their spaces
        ("Thepartiesagreethatthedeliverablesdescribedinschedulea" * 40, "without spaces"),
        ("#$%&*{}|~^ ¤§¶ " * 80, "symbols"),
        ("a#b$c¤d e§f¶g h~i|j Ð*k¿l " * 60, "soup"),
    ],
)
def test_garbled_text_is_not_usable(text, word):
    verdict = _ok(text)
    assert not verdict.usable
    assert verdict.reason.startswith("garbled text layer")
    assert word in verdict.reason or word == "cid" and "cid" in verdict.reason


def test_empty_and_whitespace_only():
    assert assess("", 612, 792).reason == "no text layer"
    assert assess(" \r\n\t ", 612, 792).usable is False


def test_too_little_text_for_the_page():
    verdict = assess("Page 3", 612, 792, [(280, 20, 330, 30)], image_fraction=1.0, path_objects=0)
    assert not verdict.usable
    assert "too little text" in verdict.reason
    # ...but the same words on a page with nothing else on it are the whole page.
    assert assess("Page 3", 612, 792, [(280, 20, 330, 30)], image_fraction=0.0, path_objects=0).usable


def test_coverage_needs_rows_and_columns():
    text = ENGLISH
    header = [(60, 760, 560, 772)] * 10  # one band across the top
    margin = [(10, 50 + 14 * i, 20, 60 + 14 * i) for i in range(50)]  # a vertical margin stamp
    assert "covers only part" in assess(text, 612, 792, header).reason
    assert "covers only part" in assess(text, 612, 792, margin).reason
    assert assess(text, 612, 792, FULL_PAGE_BOXES).usable
    # without boxes, only the text is judged
    assert assess(text, 612, 792).usable


def test_many_vector_paths_disable_the_short_page_shortcut():
    # Outlined text is drawn as paths: a short text layer then isn't the whole page.
    verdict = assess("Page 3", 612, 792, [(280, 20, 330, 30)], image_fraction=0.0, path_objects=5000)
    assert not verdict.usable


def test_verdict_chars_counts_visible_characters():
    assert assess("ab c\n d", 612, 792).chars == 4


# --- to_markdown -------------------------------------------------------------------


def test_markdown_keeps_lines_and_paragraphs():
    text = "First line\r\nsecond line   \r\n\r\n\r\n\r\nNew paragraph\r\n"
    assert to_markdown(text) == "First line\nsecond line\n\nNew paragraph\n"


def test_markdown_bullets_become_list_items():
    assert to_markdown("• one\r\n\uf0b7 two\r\n● three") == "- one\n- two\n- three\n"


def test_markdown_escapes_accidental_syntax():
    out = to_markdown("# 3 Main Street\r\n> not a quote\r\n-----\r\nplain")
    assert out == "\\# 3 Main Street\n\\> not a quote\n\\-----\nplain\n"


def test_markdown_drops_control_characters_and_form_feeds():
    assert to_markdown("a\x00b\x07c\fnext page") == "abc\n\nnext page\n"


def test_markdown_of_nothing_is_empty():
    assert to_markdown("") == ""
    assert to_markdown("\r\n \r\n") == ""


def test_markdown_does_not_invent_structure():
    text = "INTRODUCTION\r\nThis is text.\r\n1. A numbered line"
    assert to_markdown(text) == "INTRODUCTION\nThis is text.\n1. A numbered line\n"


def test_module_imports_no_pdfium_at_import_time():
    import subprocess
    import sys

    code = "import sys, qwenocr.pages.textlayer; print('pypdfium2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert textlayer.MIN_ROW_SHARE > 0
