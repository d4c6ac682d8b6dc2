"""The sandbox's card knowledge: test cards, a few BINs, and the native-OTP support table.

The native-OTP table is the one in Plural's Native OTP document (issuer × card type × network).
The sandbox keeps a card's *profile* (network, issuer, type, last four, behaviour), never its number.
"""

from __future__ import annotations

from dataclasses import dataclass

from devkit.sandbox import rules

#: (issuer, card type) → networks with native OTP, from "Supported Issuer Banks and Card Networks"
NATIVE_OTP_SUPPORT: dict[tuple[str, str], frozenset[str]] = {
    ("ICICI", "CREDIT"): frozenset({"VISA", "MASTERCARD"}),
    ("ICICI", "DEBIT"): frozenset({"VISA", "MASTERCARD"}),
    ("HDFC", "CREDIT"): frozenset({"VISA", "MASTERCARD", "RUPAY"}),
    ("HDFC", "DEBIT"): frozenset({"VISA", "MASTERCARD"}),
    ("AXIS", "CREDIT"): frozenset({"VISA", "MASTERCARD"}),
    ("AXIS", "DEBIT"): frozenset({"VISA", "MASTERCARD"}),
    ("SBI", "CREDIT"): frozenset({"VISA", "MASTERCARD", "RUPAY"}),
    ("SBI", "DEBIT"): frozenset({"VISA", "MASTERCARD"}),
    ("KOTAK", "CREDIT"): frozenset({"VISA"}),
    ("KOTAK", "DEBIT"): frozenset({"VISA"}),
    ("YESBANK", "CREDIT"): frozenset({"VISA", "MASTERCARD"}),
}

# behaviours
SUCCEEDS = "SUCCEEDS"
DECLINED = "DECLINED"
OTP_REFUSED = "OTP_REFUSED"  # claims native OTP support, but Generate OTP is refused: use the ACS page


@dataclass(frozen=True)
class TestCard:
    __test__ = False  # not a pytest class

    number: str
    network: str
    issuer: str
    card_type: str
    behaviour: str = SUCCEEDS
    native_otp: bool | None = None  # None: from the table
    description: str = ""
    seed_sample: bool = False  # a number from Plural's documents: accepted without a Luhn check


TEST_CARDS: tuple[TestCard, ...] = (
    TestCard("4012001037141112", "VISA", "INTL HDQTRS-CENTER OWNED", "CREDIT", native_otp=True, seed_sample=True,
             description="VISA credit, native OTP supported, succeeds (OTP 123456)"),
    TestCard("5555555555554444", "MASTERCARD", "KOTAK", "CREDIT",
             description="Mastercard credit, no native OTP: succeeds through the ACS page"),
    TestCard("4000000000000002", "VISA", "HDFC", "CREDIT", behaviour=DECLINED,
             description="declined at Create Payment (PAYMENT_DECLINED)"),
    TestCard("4111111111111111", "VISA", "AXIS", "CREDIT", behaviour=OTP_REFUSED,
             description="native OTP advertised but Generate OTP refused: ACS fallback"),
    TestCard("2870287028702870", "VISA", "HDFC", "CREDIT", seed_sample=True,
             description="the Create Payment sample card: VISA credit (HDFC), native OTP"),
    TestCard("4690478199123123", "VISA", "HDFC", "DEBIT", seed_sample=True,
             description="Debit EMI sample card (HDFC DC), native OTP"),
    TestCard("6000000060200000", "RUPAY", "ICICI", "DEBIT",
             description="Debit EMI sample card (ICICI DC), the bank page"),
    TestCard("4690000046910000", "VISA", "HDFC", "CREDIT", seed_sample=True,
             description="Credit EMI sample card (HDFC CC), native OTP"),
    TestCard("4166440000000018", "VISA", "PNB", "CREDIT",
             description="Credit EMI (PNB CC, brand offers on redmi_1), no native OTP: the bank page"),
    TestCard("4147670000000014", "VISA", "INDUSIND", "CREDIT",
             description="Credit EMI (INDUSIND CC), no native OTP: the bank page"),
    TestCard("5212340000000011", "MASTERCARD", "HDFC", "DEBIT", behaviour=DECLINED,
             description="Debit EMI (HDFC DC), declined at Create Payment (PAYMENT_DECLINED)"),
)

_BY_NUMBER = {c.number: c for c in TEST_CARDS}

#: a few issuer BIN prefixes so that other Luhn-valid cards get a plausible issuer
ISSUER_BINS: tuple[tuple[str, str, str], ...] = (
    ("4386", "HDFC", "CREDIT"),
    ("4591", "SBI", "CREDIT"),
    ("4215", "ICICI", "DEBIT"),
    ("5241", "AXIS", "CREDIT"),
    ("6522", "SBI", "CREDIT"),
)


@dataclass(frozen=True)
class CardProfile:
    network: str
    issuer: str
    card_type: str
    last4: str
    behaviour: str
    native_otp: bool
    seed_sample: bool

    def card_data(self) -> dict[str, str]:
        return {
            "card_type": self.card_type,
            "network_name": self.network,
            "issuer_name": self.issuer,
            "card_category": "CONSUMER",
            "country_code": "IND",
            "last4_digits": self.last4,
        }


def native_otp_supported(issuer: str, card_type: str, network: str) -> bool:
    return network in NATIVE_OTP_SUPPORT.get((issuer.upper(), card_type.upper()), frozenset())


def profile(number: str) -> CardProfile:
    digits = number.replace(" ", "").replace("-", "")
    card = _BY_NUMBER.get(digits)
    if card is not None:
        native = card.native_otp if card.native_otp is not None else native_otp_supported(
            card.issuer, card.card_type, card.network)
        return CardProfile(card.network, card.issuer, card.card_type, digits[-4:], card.behaviour, native,
                           card.seed_sample)
    network = rules.network(digits)
    issuer, card_type = "UNKNOWN", "CREDIT"
    for prefix, bank, kind in ISSUER_BINS:
        if digits.startswith(prefix):
            issuer, card_type = bank, kind
            break
    return CardProfile(network, issuer, card_type, digits[-4:], SUCCEEDS,
                       native_otp_supported(issuer, card_type, network), False)


def is_seed_sample(number: str) -> bool:
    card = _BY_NUMBER.get(number.replace(" ", "").replace("-", ""))
    return bool(card and card.seed_sample)
