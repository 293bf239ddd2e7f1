from __future__ import annotations

from decimal import Decimal

import pytest

from bridge.mapping import Blocker
from bridge.models import Language
from bridge.notes import (
    REASON_LIMIT,
    invoice_failed_note,
    not_invoiceable_note,
    payment_link_note,
)

URL = "https://uinvoice.upayments.com/AbCdEf1234"


@pytest.mark.parametrize("amount, currency, language, expected", [
    (Decimal("12.5"), "KWD", Language.EN,
     f"Pay 12.500 KWD for this order with UPayments: {URL}"),
    (Decimal("10"), "usd", Language.EN, f"Pay 10.00 USD for this order with UPayments: {URL}"),
    (Decimal("1500.4"), "JPY", Language.EN,
     f"Pay 1500 JPY for this order with UPayments: {URL}"),
    (Decimal("12.5"), "KWD", Language.AR,
     f"\u0627\u062f\u0641\u0639 12.500 KWD \u0644\u0647\u0630\u0627 \u0627\u0644\u0637\u0644\u0628 "
     f"\u0639\u0628\u0631 UPayments: {URL}"),
])
def test_payment_link_note(amount: Decimal, currency: str, language: Language,
                           expected: str) -> None:
    assert payment_link_note(URL, amount, currency, language) == expected


def test_payment_link_note_keeps_the_url_exactly() -> None:
    url = "https://dev-uinvoice.upayments.com/x_Y-z?session=\u0661"
    for language in Language:
        assert payment_link_note(url, Decimal("1"), "KWD", language).endswith(" " + url)


@pytest.mark.parametrize("blocker, words", [
    (Blocker.UNSUPPORTED_CURRENCY, ["currency", "KWD", "AED"]),
    (Blocker.ZERO_TOTAL, ["total is zero"]),
    (Blocker.NO_EMAIL, ["no valid billing e-mail", "by e-mail"]),
    (Blocker.NO_MOBILE, ["phone number", "by SMS", "+96512345678"]),
])
def test_not_invoiceable_note_english(blocker: Blocker, words: list[str]) -> None:
    note = not_invoiceable_note([blocker], Language.EN)
    assert note.startswith("UPay cannot invoice this order yet. ")
    for word in words:
        assert word in note


@pytest.mark.parametrize("blocker, words", [
    (Blocker.UNSUPPORTED_CURRENCY, ["\u0639\u0645\u0644\u0629", "KWD"]),
    (Blocker.ZERO_TOTAL, ["\u0635\u0641\u0631"]),
    (Blocker.NO_EMAIL, ["\u0628\u0631\u064a\u062f \u0625\u0644\u0643\u062a\u0631\u0648\u0646\u064a"]),
    (Blocker.NO_MOBILE, ["\u0647\u0627\u062a\u0641", "SMS", "+96512345678"]),
])
def test_not_invoiceable_note_arabic(blocker: Blocker, words: list[str]) -> None:
    note = not_invoiceable_note([blocker], Language.AR)
    for word in words:
        assert word in note


@pytest.mark.parametrize("language", list(Language))
def test_not_invoiceable_note_has_one_sentence_per_blocker(language: Language) -> None:
    # The note is an intro sentence, then the blockers' sentences in order.
    sentence = {b: not_invoiceable_note([b], language).split(". ", 1)[1] for b in Blocker}
    assert len(set(sentence.values())) == len(Blocker)
    both = not_invoiceable_note([Blocker.NO_MOBILE, Blocker.NO_EMAIL], language)
    intro = both.split(". ", 1)[0]
    assert both == f"{intro}. {sentence[Blocker.NO_MOBILE]} {sentence[Blocker.NO_EMAIL]}"


def test_not_invoiceable_note_does_not_repeat_a_blocker() -> None:
    assert not_invoiceable_note([Blocker.NO_EMAIL, Blocker.NO_EMAIL], Language.EN) == \
        not_invoiceable_note([Blocker.NO_EMAIL], Language.EN)


def test_not_invoiceable_note_accepts_plain_values() -> None:
    assert not_invoiceable_note(["no_email"], "ar") == not_invoiceable_note([Blocker.NO_EMAIL],
                                                                          Language.AR)


def test_not_invoiceable_note_needs_a_blocker() -> None:
    with pytest.raises(ValueError):
        not_invoiceable_note([], Language.EN)


@pytest.mark.parametrize("reason, language, expected", [
    ("The API key is not activated", Language.EN,
     "UPay did not create an invoice for this order: The API key is not activated"),
    ("The API key is not activated", Language.AR,
     "\u0644\u0645 \u062a\u064f\u0646\u0634\u0626 UPay \u0641\u0627\u062a\u0648\u0631\u0629 "
     "\u0644\u0647\u0630\u0627 \u0627\u0644\u0637\u0644\u0628: The API key is not activated"),
    ("  line one\nline\ttwo\x00 ", Language.EN,
     "UPay did not create an invoice for this order: line one line two"),
    ("", Language.EN, "UPay did not create an invoice for this order: no reason given"),
])
def test_invoice_failed_note(reason: str, language: Language, expected: str) -> None:
    assert invoice_failed_note(reason, language) == expected


def test_invoice_failed_note_cuts_long_reasons() -> None:
    note = invoice_failed_note("<html>" + "x" * 5000, Language.EN)
    reason = note.split(": ", 1)[1]
    assert len(reason) == REASON_LIMIT and reason.endswith("\u2026")
