"""Fixed vectors: the rules both sides need (signatures, EMI figures, Luhn and card shapes, expiry,
currencies), each vector stated once with its source, checked against the sandbox's own
implementation (``devkit.sandbox``: Plural's side) and the orchestrator's (ours), which are
written apart so that a mistake in one is caught by the documents, not confirmed by the other.

Sources: "card doc" is Plural's Card Native OTP document, "EMI doc" its Debit EMI document
(tests/fixtures/seeds), "notes" is plural-notes.md. A vector the documents do not give is built
by hand from the documented rule, and says how.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from orchestrator.domain import cards as our_cards
from orchestrator.domain import emi as our_emi
from orchestrator.domain.money import SUPPORTED_CURRENCIES
from orchestrator.plural import signatures as ours
from devkit.sandbox import emi as sandbox_emi
from devkit.sandbox import rules as sandbox_rules
from devkit.sandbox import signing as sandbox
from tests.seeds import emi_samples

# --- webhook signature ------------------------------------------------------------------

#: notes, "Webhooks": the test vector from Plural's documents
WEBHOOK = dict(secret=b"abc1234", webhook_id="msg_2nEfCaUDn9fynC9Kz2upo1QSydl", timestamp=1728543028,
               body='{"payload":"payload"}', signature="v1,Ns46HrH+Nfu9dZtBUVvSLyrOD5JH0SAGlNo3M5yobfQ=")


def test_the_sandbox_signs_the_documents_webhook_vector():
    assert sandbox.webhook_signature(WEBHOOK["secret"], WEBHOOK["webhook_id"], WEBHOOK["timestamp"],
                                     WEBHOOK["body"]) == WEBHOOK["signature"]


def test_the_orchestrator_signs_and_accepts_the_documents_webhook_vector():
    assert ours.sign_webhook(WEBHOOK["secret"], WEBHOOK["webhook_id"], WEBHOOK["timestamp"],
                             WEBHOOK["body"]) == WEBHOOK["signature"]
    headers = {"webhook-id": WEBHOOK["webhook_id"], "webhook-timestamp": str(WEBHOOK["timestamp"]),
               "webhook-signature": WEBHOOK["signature"]}
    assert ours.verify_webhook_signature(WEBHOOK["secret"], WEBHOOK["body"].encode(), headers) == WEBHOOK["timestamp"]


# --- return-URL (callback) signature ----------------------------------------------------

#: card doc and EMI doc, "Verify Payment Signature": the request strings of the examples, from the
#: fields they list (the examples' ``<order_id>`` filled in with the 4.1 samples' order id)
ORDER_ID = "v1-4405071524-aa-qlAtAf"
REQUEST_STRINGS = [
    ({"order_id": ORDER_ID, "status": "AUTHORIZED"}, f"order_id={ORDER_ID}&status=AUTHORIZED"),
    ({"status": "FAILED", "order_id": ORDER_ID, "error_message": "Consumer Authentication required",
      "error_code": "USER_AUTHENTICATION_FAILED"},
     f"error_code=USER_AUTHENTICATION_FAILED&error_message=Consumer Authentication required&order_id={ORDER_ID}"
     "&status=FAILED"),
]

#: The documents' return-URL samples carry ``ba7816bf…15ad`` for every callback: that is SHA-256("abc")
#: in lower case, not an HMAC of the fields, and no secret is given, so it cannot be a vector.
#: These are built by hand from the documented rule (HMAC-SHA256 of the request string, keyed with
#: the hex-decoded secret, upper-case hex), computed with a third implementation:
#: ``printf '%s' "$string" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$SECRET``.
CALLBACK_SECRET = "0123456789ABCDEF0123456789ABCDEF"
CALLBACKS = [
    ({"order_id": ORDER_ID, "status": "AUTHORIZED"},
     "56BA48FD0FB800E4321B4BDF22EE3CD533F55E99A11DB6D4A623ADF4FD965309"),
    ({"order_id": ORDER_ID, "status": "FAILED", "error_code": "USER_AUTHENTICATION_FAILED",
      "error_message": "Consumer Authentication required"},
     "16446DA2A8FB81FD215615DF0D7CC01E30E0D3BBA4EA1FFF1414683072B3A763"),
    # the EMI doc's 6.1 samples name the status ``payment_status``: the key signed is the one sent
    ({"order_id": ORDER_ID, "payment_status": "AUTHORIZED"},
     "9D403856050FE63D2A24250B9C335BB2BC85225C631E3F877075BE816B145B96"),
]


@pytest.mark.parametrize("fields,string", REQUEST_STRINGS)
def test_both_sides_build_the_documents_request_string(fields, string):
    assert sandbox.callback_string({**fields, "signature": "X"}) == string
    assert ours.callback_message({**fields, "signature": "X"}) == string


def test_both_sides_decode_the_hex_secret_alike():
    assert sandbox.secret_from_hex(CALLBACK_SECRET) == bytes.fromhex(CALLBACK_SECRET) == bytes(
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF] * 2)


@pytest.mark.parametrize("fields,signature", CALLBACKS)
def test_the_sandbox_signs_the_callback_vectors(fields, signature):
    assert sandbox.callback_signature(fields, sandbox.secret_from_hex(CALLBACK_SECRET)) == signature


@pytest.mark.parametrize("fields,signature", CALLBACKS)
def test_the_orchestrator_signs_and_accepts_the_callback_vectors(fields, signature):
    key = bytes.fromhex(CALLBACK_SECRET)
    assert ours.sign_callback(fields, key) == signature
    ours.verify_callback({**fields, "signature": signature}, key)


# --- EMI figures ------------------------------------------------------------------------

@dataclass(frozen=True)
class Tenure:
    source: str
    price: int
    discount: int
    subvention: tuple[str, int] | None  # (INSTANT or POST, percent of the price less the discount)
    months: int
    rate: int
    loan: int
    subvention_amount: int
    monthly: int
    total: int
    interest: int
    emi_type: str


_FIRST = "EMI doc, Offer Discovery, first sample response (INDUSIND CC, 1,200,000 paise)"
_SECOND = "EMI doc, Offer Discovery, second sample response (PNB CC, 2,000,000 paise, product redmi_1)"
_VALIDATE = "EMI doc, Offer Validation, sample request (HDFC CC, 3 months, merchant-bank offer)"
TENURES = [
    Tenure(_FIRST, 1200000, 0, None, 3, 16, 1200000, 0, 410713, 1232139, 32139, "STANDARD"),
    Tenure(_FIRST, 1200000, 0, None, 6, 16, 1200000, 0, 209436, 1256616, 56616, "STANDARD"),
    Tenure(_FIRST, 1200000, 0, None, 9, 16, 1200000, 0, 142379, 1281411, 81411, "STANDARD"),
    Tenure(_FIRST, 1200000, 0, None, 12, 16, 1200000, 0, 108877, 1306524, 106524, "STANDARD"),
    Tenure(_FIRST, 1200000, 0, None, 18, 16, 1200000, 0, 75427, 1357686, 157686, "STANDARD"),
    Tenure(_FIRST, 1200000, 0, None, 24, 16, 1200000, 0, 58755, 1410120, 210120, "STANDARD"),
    Tenure(_SECOND, 2000000, 200000, ("INSTANT", 5), 3, 16, 1714286, 85714, 586734, 1760202, 45916, "NO_COST"),
    Tenure(_SECOND, 2000000, 200000, ("POST", 5), 6, 16, 1800000, 90000, 314154, 1884924, 84924, "NO_COST"),
    Tenure(_SECOND, 2000000, 200000, ("POST", 5), 9, 16, 1800000, 90000, 213568, 1922112, 122112, "LOW_COST"),
    Tenure(_SECOND, 2000000, 0, None, 12, 16, 2000000, 0, 181461, 2177532, 177532, "STANDARD"),
    Tenure(_SECOND, 2000000, 0, None, 18, 16, 2000000, 0, 125712, 2262816, 262816, "STANDARD"),
    Tenure(_SECOND, 2000000, 0, None, 24, 16, 2000000, 0, 97926, 2350224, 350224, "STANDARD"),
    Tenure(_SECOND, 2000000, 0, None, 36, 16, 2000000, 0, 70314, 2531304, 531304, "STANDARD"),
    Tenure(_VALIDATE, 2000000, 50000, None, 3, 20, 1950000, 0, 671786, 2015358, 65358, "STANDARD"),
    Tenure("EMI doc, Create Payment, second sample request (ICICI DC, 36 months)",
           1200000, 0, None, 36, 16, 1200000, 0, 42188, 1518768, 318768, "STANDARD"),
]


def _sandbox_tenure(v: Tenure) -> sandbox_emi.Figures:
    base = v.price - v.discount
    instant = post = 0
    if v.subvention and v.subvention[0] == "INSTANT":
        instant = base - sandbox_emi.instant_loan(base, v.subvention[1])
    elif v.subvention:
        post = sandbox_emi.share(base, v.subvention[1])
    return sandbox_emi.tenure_figures(base, v.months, v.rate, instant_subvention=instant, post_subvention=post)


@pytest.mark.parametrize("v", TENURES, ids=lambda v: f"{v.price}-{v.months}m-{v.rate}pct-{v.emi_type}")
def test_the_sandbox_computes_the_documents_tenures(v):
    f = _sandbox_tenure(v)
    assert (f.loan, f.subvention, f.monthly, f.total, f.interest, f.emi_type) == (
        v.loan, v.subvention_amount, v.monthly, v.total, v.interest, v.emi_type), v.source


@pytest.mark.parametrize("v", TENURES, ids=lambda v: f"{v.price}-{v.months}m-{v.rate}pct-{v.emi_type}")
def test_the_orchestrator_computes_the_documents_tenures(v):
    kind, pct = v.subvention or (None, 0)
    q = our_emi.quote(v.price, v.months, v.rate, discount=v.discount, subvention_type=kind, subvention_pct=pct)
    assert (q.loan, q.subvention, q.monthly, q.total, q.interest, q.emi_type) == (
        v.loan, v.subvention_amount, v.monthly, v.total, v.interest, v.emi_type), v.source


def test_the_vectors_are_the_documents_figures():
    """Every tenure figure set in the EMI doc's discovery and validation samples is a vector above
    (so a vector cannot drift from its document unseen)."""
    found = set()
    for sample in emi_samples():
        issuers = sample.get("issuers") or ([sample["offer_data"]["offer_details"]] if "offer_data" in sample else [])
        for issuer in issuers:
            for t in issuer.get("tenures") or [issuer["tenure"]]:
                found.add(tuple(t[k]["value"] for k in ("loan_amount", "monthly_emi_amount", "total_emi_amount",
                                                        "interest_amount")) + (t["emi_type"],))
    stated = {(v.loan, v.monthly, v.total, v.interest, v.emi_type) for v in TENURES}
    assert found and found <= stated


#: EMI doc, Offer Discovery, second sample: the brand discount of 10 % on the 2,000,000-paise product
#: is 200,000, shared 50 % by the merchant (breakup.merchant 100,000)
PERCENTAGES = [(2000000, 10, 200000), (200000, 50, 100000),
               # EMI doc, second sample, POST subvention: 5 % of 1,800,000
               (1800000, 5, 90000)]


@pytest.mark.parametrize("amount,pct,value", PERCENTAGES)
def test_both_sides_take_the_documents_percentages(amount, pct, value):
    assert sandbox_emi.share(amount, pct) == our_emi.percent_of(amount, pct) == value


#: The EMI doc's Create Payment samples (HDFC DC, 3 months, 16 %, 1,200,000 paise) quote 410,714 a
#: month (total 1,232,142), a paisa a month above the formula every discovery sample follows: both
#: sides give the formula's 410,713; the sandbox accepts that one figure set by name
#: (``offers.SAMPLE_EXCEPTIONS``).
def test_both_sides_give_the_formula_where_the_create_payment_sample_is_a_paisa_above_it():
    assert sandbox_emi.monthly_emi(1200000, 16, 3) == our_emi.monthly_instalment(1200000, 16, 3) == 410713


#: built by hand (no sample at 0 % in the documents): 1,000 paise over 3 months is 333.33…, rounded up
def test_both_sides_round_a_zero_rate_instalment_up():
    assert sandbox_emi.monthly_emi(1000, 0, 3) == our_emi.monthly_instalment(1000, 0, 3) == 334


# --- cards ------------------------------------------------------------------------------

LUHN = [
    ("4012001037141112", True, "card doc, Get Card Details sample (payment_identifier)"),
    ("6000000060200000", True, "EMI doc, Create Payment, second sample request (card_number)"),
    ("2870-2870-2870-2870", False, "card doc, Create Payment sample request: a documents' number, not Luhn-valid"),
    ("4690478199123123", False, "EMI doc, Create Payment, first sample request: not Luhn-valid"),
    ("4690000046910000", False, "EMI doc, Offer Validation sample request: not Luhn-valid"),
    # by hand: well-known valid test numbers, and one with its check digit changed
    ("4111111111111111", True, "by hand: the common VISA test number"),
    ("5555 5555 5555 4444", True, "by hand: the common Mastercard test number, spaced"),
    ("4111111111111112", False, "by hand: 4111111111111111 with a wrong check digit"),
    ("79927398713", False, "by hand: the classic Luhn example is valid but only 11 digits"),
]


@pytest.mark.parametrize("number,valid,source", LUHN)
def test_both_sides_agree_on_luhn(number, valid, source):
    assert sandbox_rules.passes_luhn(number) is valid, source
    assert (our_cards.valid_shape(number) and our_cards.luhn_ok(number)) is valid, source


SHAPES = [
    ("2870-2870-2870-2870", True, "card doc, Create Payment sample request: dashes between the digits"),
    ("4012001037141112", True, "card doc, Get Card Details sample"),
    # by hand, from "12 to 19 digits"
    ("401200103714", True, "by hand: 12 digits"),
    ("4012001037141112123", True, "by hand: 19 digits"),
    ("40120010371", False, "by hand: 11 digits"),
    ("40120010371411121234", False, "by hand: 20 digits"),
    ("4012 0010 3714 111x", False, "by hand: a letter"),
    ("", False, "by hand: empty"),
]


@pytest.mark.parametrize("number,ok,source", SHAPES)
def test_both_sides_agree_on_card_shapes(number, ok, source):
    assert sandbox_rules.well_formed(number) is ok, source
    assert our_cards.valid_shape(number) is ok, source


NETWORKS = [
    ("4012001037141112", "VISA", "card doc, Get Card Details sample response: card_network VISA"),
    # by hand, from the schemes' IIN ranges
    ("5555555555554444", "MASTERCARD", "by hand: 51-55"),
    ("2221000000000009", "MASTERCARD", "by hand: 2221-2720"),
    ("2720990000000000", "MASTERCARD", "by hand: 2221-2720, upper end"),
    ("2721000000000000", "UNKNOWN", "by hand: just past 2720"),
    ("378282246310005", "AMEX", "by hand: 34, 37"),
    ("36227206271667", "DINERS", "by hand: 36"),
    ("6000000060200000", "RUPAY", "by hand: 60"),
    ("6522000000000000", "RUPAY", "by hand: 65"),
    ("5081000000000000", "RUPAY", "by hand: 508"),
    ("9999000000000000", "UNKNOWN", "by hand: no scheme"),
]


@pytest.mark.parametrize("number,network,source", NETWORKS)
def test_both_sides_agree_on_the_network(number, network, source):
    assert sandbox_rules.network(number) == network, source
    assert our_cards.network_of(number) == network, source


TODAY = dt.date(2026, 12, 7)
#: by hand (the documents give no rule beyond "expiry_month", "expiry_year" as "MM" and "YY"/"YYYY"):
#: a card is good to the end of its expiry month
EXPIRY = [("12", "26", True), ("12", "2026", True), ("11", "26", False), ("01", "27", True), ("1", "2027", True),
          ("12", "25", False)]


@pytest.mark.parametrize("month,year,good", EXPIRY)
def test_both_sides_agree_on_expiry(month, year, good):
    assert (not sandbox_rules.expired(month, year, TODAY)) is good
    assert our_cards.expiry_in_future(month, year, TODAY) is good


# --- currencies -------------------------------------------------------------------------

#: EMI doc and card doc: every amount in every sample is INR; by hand: "XYZ" is no ISO 4217 code
@pytest.mark.parametrize("code,supported", [("INR", True), ("XYZ", False), ("inr", False)])
def test_both_sides_agree_on_currencies(code, supported):
    assert (code in sandbox_rules.CURRENCIES) is supported
    assert (code in SUPPORTED_CURRENCIES) is supported


def test_every_currency_we_accept_the_sandbox_accepts():
    """A checkout the orchestrator takes must not be refused by its imitation of Plural for its currency."""
    assert SUPPORTED_CURRENCIES <= sandbox_rules.CURRENCIES
