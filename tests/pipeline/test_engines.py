"""The shipped OCR engines on the committed samples, and the offline rule-based extractor."""

from __future__ import annotations

import shutil

import pytest

from docstatus.dev.demo import pdf_without_text_layer
from docstatus.pipeline import (
    DocumentOcr,
    NoTextFound,
    OcrEngineNotInstalled,
    OcrError,
    PdfTextLayer,
    PlainText,
    RuleBasedExtractor,
    TesseractOcr,
    UnsupportedDocumentType,
    is_retryable,
)

from .conftest import DATA

INVOICE_LINES = ["INVOICE 2024-0042", "Date: 2024-03-15", "Total: 1,234.56 EUR"]
needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="Tesseract is not installed (apt-get install tesseract-ocr)")


def test_pdf_text_layer():
    text = PdfTextLayer()((DATA / "invoice.pdf").read_bytes())
    assert text.splitlines()[:3] == INVOICE_LINES


def test_plain_text_in_utf8_utf16_and_cp1252():
    assert PlainText()((DATA / "invoice.txt").read_bytes()).startswith("INVOICE 2024-0042\n")
    assert PlainText()("Überweisung €5".encode("utf-16")) == "Überweisung €5"
    assert PlainText()("Überweisung €5".encode("cp1252")) == "Überweisung €5"


@needs_tesseract
@pytest.mark.parametrize("sample, mime_type", [("invoice.png", "image/png"), ("invoice.jpg", "image/jpeg"),
                                               ("invoice.tiff", "image/tiff")])
def test_images_through_tesseract(sample, mime_type):
    text = DocumentOcr()((DATA / sample).read_bytes(), mime_type)
    assert [line for line in text.splitlines() if line.strip()][:3] == INVOICE_LINES


def test_an_image_without_tesseract_fails_clearly_and_for_good():
    engine = DocumentOcr(image=TesseractOcr(tesseract_cmd="tesseract-that-is-not-installed"))
    with pytest.raises(OcrEngineNotInstalled, match="^OCR engine not installed: image/png needs Tesseract"):
        engine((DATA / "invoice.png").read_bytes(), "image/png")
    assert not is_retryable(OcrEngineNotInstalled("x"))


def test_a_pdf_without_text_layer_and_a_corrupt_pdf_fail():
    with pytest.raises(NoTextFound, match="scanned PDF"):
        DocumentOcr()(pdf_without_text_layer(), "application/pdf")
    with pytest.raises(OcrError, match="not a readable PDF"):
        DocumentOcr()(b"%PDF-1.4\nthis is not really a PDF", "application/pdf")


def test_unsupported_type_and_empty_text():
    with pytest.raises(UnsupportedDocumentType):
        DocumentOcr()(b"PK\x03\x04", "application/zip")
    with pytest.raises(NoTextFound):
        DocumentOcr()(b"  \n\t ", "text/plain")


def test_rule_based_fields_of_the_invoice():
    fields = RuleBasedExtractor()((DATA / "invoice.txt").read_text())
    assert fields == {
        "title": "INVOICE 2024-0042",
        "dates": ["2024-03-15"],
        "amounts": [{"value": "1234.56", "currency": "EUR", "text": "1,234.56 EUR"}],
        "emails": ["billing@example.com"],
    }


def test_rule_based_dates_amounts_and_emails():
    fields = RuleBasedExtractor()(
        "\n\n  Payment   reminder \nDue 5 March 2024, or March 6, 2024; sent 03/04/2024, 13/04/2024 and "
        "04/13/2024 (not 31/02/2024). Pay €1.234,56, $ 12, 12,5 EUR, EUR 5 or 1 234,00 CHF; "
        "invoice 2024-0042 totals 99. Write to a.b+c@mail.example.org or A.B+C@MAIL.EXAMPLE.ORG.")
    assert fields["title"] == "Payment reminder"
    assert fields["dates"] == ["2024-03-05", "2024-03-06", "2024-04-03", "2024-04-13"]
    assert [(a["value"], a["currency"]) for a in fields["amounts"]] == [
        ("1234.56", "EUR"), ("12", "USD"), ("12.5", "EUR"), ("5", "EUR"), ("1234.00", "CHF")]
    assert fields["emails"] == ["a.b+c@mail.example.org", "A.B+C@MAIL.EXAMPLE.ORG"]
    assert RuleBasedExtractor()("") == {"title": None, "dates": [], "amounts": [], "emails": []}
