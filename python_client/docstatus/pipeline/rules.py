"""The offline field extractor: rules, no LLM. The default when no LLM service is configured.

It finds what regular expressions find reliably in business documents and nothing more:

- ``title``: the first non-empty line;
- ``dates``: ISO dates (2024-03-15), day-first numeric dates (15/03/2024, 15.03.2024; month-first
  only where the day-first reading is impossible), and dates with a month name (15 March 2024,
  March 15, 2024), as ISO strings, each once, in order of appearance;
- ``amounts``: numbers next to a currency (1,234.56 EUR, EUR 1.234,56, $12, 12 €) as
  ``{"value": "1234.56", "currency": "EUR", "text": ...}``;
- ``emails``: e-mail addresses, each once.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

_MONTHS = {name: number for number, names in enumerate([
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
    ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
    ("november", "nov"), ("december", "dec")], start=1) for name in names}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))

_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUMERIC_DATE = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\.?\s+({_MONTH})\.?,?\s+(\d{{4}})\b", re.IGNORECASE)
_MONTH_DAY_YEAR = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE)

_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "CHF": "CHF"}
_CURRENCY = r"(?:EUR|USD|GBP|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN|CZK|INR|CNY|[€$£¥₹])"
_NUMBER = r"\d{1,3}(?:[,.' ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_AMOUNT = re.compile(rf"(?P<pre>{_CURRENCY})\s?(?P<a>{_NUMBER})(?![\d])"
                     rf"|(?<![\d.,])(?P<b>{_NUMBER})\s?(?P<post>{_CURRENCY})(?![A-Za-z])")

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

TITLE_MAX = 200


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _dates(text: str) -> list[str]:
    found: list[tuple[int, str | None]] = []
    for match in _ISO_DATE.finditer(text):
        found.append((match.start(), _iso(int(match[1]), int(match[2]), int(match[3]))))
    for match in _NUMERIC_DATE.finditer(text):
        first, second, year = int(match[1]), int(match[2]), int(match[3])
        # Day first, as most of the world writes it; month first only when day first cannot be.
        day, month = (second, first) if second > 12 >= first else (first, second)
        found.append((match.start(), _iso(year, month, day)))
    for match in _DAY_MONTH_YEAR.finditer(text):
        found.append((match.start(), _iso(int(match[3]), _MONTHS[match[2].lower()], int(match[1]))))
    for match in _MONTH_DAY_YEAR.finditer(text):
        found.append((match.start(), _iso(int(match[3]), _MONTHS[match[1].lower()], int(match[2]))))
    return list(dict.fromkeys(iso for _, iso in sorted(found) if iso))


def _decimal(number: str) -> str | None:
    """'1,234.56' / '1.234,56' / "1'234.56" / '12,5' -> '1234.56' / '1234.56' / '1234.56' / '12.5'."""
    digits = number.replace(" ", "").replace("'", "")
    last_separator = max(digits.rfind(","), digits.rfind("."))
    if last_separator != -1 and len(digits) - last_separator - 1 in (1, 2):
        whole, fraction = digits[:last_separator], digits[last_separator + 1:]
    else:
        whole, fraction = digits, ""
    whole = whole.replace(",", "").replace(".", "")
    try:
        return str(Decimal(f"{whole}.{fraction}" if fraction else whole))
    except InvalidOperation:
        return None


def _amounts(text: str) -> list[dict[str, str]]:
    amounts = []
    for match in _AMOUNT.finditer(text):
        number = match["a"] or match["b"]
        currency = match["pre"] or match["post"]
        value = _decimal(number)
        if value is not None:
            amounts.append({"value": value, "currency": _CURRENCY_SYMBOLS.get(currency, currency.upper()),
                            "text": match.group(0).strip()})
    return amounts


def _title(text: str) -> str | None:
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())[:TITLE_MAX]
    return None


class RuleBasedExtractor:
    """Offline field extraction with rules (no LLM): title, dates, amounts, e-mail addresses."""

    name = "rule-based (offline, no LLM)"

    def __call__(self, text: str) -> dict[str, Any]:
        return {
            "title": _title(text),
            "dates": _dates(text),
            "amounts": _amounts(text),
            "emails": list(dict.fromkeys(match.group(0) for match in _EMAIL.finditer(text))),
        }


__all__ = ["RuleBasedExtractor"]
