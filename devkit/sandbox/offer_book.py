"""The sandbox's EMI offer book: issuers, their tenures, bank and brand offers (pydantic models, JSON
through ``SANDBOX_OFFERS_FILE`` or ``PUT /sandbox/offers``), and the default book, which reproduces
Plural's Debit EMI document (see ``offers``, which discovers and validates against it)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrandOffer(_Model):
    product_code: str
    brand_id: str
    offer_id: str
    offer_parameter_id: str
    discount_pct: Decimal = Field(default=Decimal(0), ge=0, lt=100)
    merchant_share_pct: Decimal = Field(default=Decimal(50), ge=0, le=100)  # of the discount; the brand pays the rest
    subvention_type: Literal["INSTANT", "POST"] | None = None
    subvention_pct: Decimal = Field(default=Decimal(0), ge=0, lt=100)


class TenureOffer(_Model):
    tenure_id: str
    months: int = Field(gt=0, le=120)
    rate: Decimal = Field(ge=0, le=60)
    program_type: str = "BANK_EMI"
    offer_id: str
    offer_parameter_id: str
    processing_fee: int = Field(default=19900, ge=0)
    brands: tuple[BrandOffer, ...] = ()
    bank_discount: int = Field(default=0, ge=0)  # flat INSTANT merchant-bank-offer discount, paise
    bank_discount_offer: tuple[str, str] | None = None


class IssuerOffer(_Model):
    id: str
    name: str
    issuer_type: Literal["CC_BANK", "DC_BANK"]
    bank: str  # the card issuer's name, as the card profile gives it
    priority: int = 1
    tenures: tuple[TenureOffer, ...]
    #: the smallest order (paise) this issuer offers EMI on: required, banks have minimums
    min_amount: int = Field(gt=0)
    max_amount: int | None = Field(default=None, gt=0)

    @property
    def card_type(self) -> str:
        return "DEBIT" if self.issuer_type == "DC_BANK" else "CREDIT"

    def takes(self, amount: int) -> bool:
        return amount >= self.min_amount and (self.max_amount is None or amount <= self.max_amount)


class OfferBook(_Model):
    issuers: tuple[IssuerOffer, ...]

    @model_validator(mode="after")
    def _unique(self) -> "OfferBook":
        ids = [i.id for i in self.issuers]
        if len(ids) != len(set(ids)):
            raise ValueError("issuer ids must be unique")
        for issuer in self.issuers:
            tenure_ids = [t.tenure_id for t in issuer.tenures]
            if len(tenure_ids) != len(set(tenure_ids)):
                raise ValueError(f"tenure ids of issuer {issuer.id} must be unique")
        return self


def _redmi(subvention: str) -> BrandOffer:
    return BrandOffer(product_code="redmi_1", brand_id="3", offer_id="309", offer_parameter_id="20",
                      discount_pct=Decimal(10), merchant_share_pct=Decimal(50), subvention_type=subvention,
                      subvention_pct=Decimal(5))


def _t(tenure_id: str, months: int, rate: int, offer: tuple[str, str], **extra: Any) -> TenureOffer:
    return TenureOffer(tenure_id=tenure_id, months=months, rate=Decimal(rate), offer_id=offer[0],
                       offer_parameter_id=offer[1], **extra)


_B1563, _B1562, _B1595, _B1564 = ("1563", "63813"), ("1562", "63812"), ("1595", "63850"), ("1564", "63814")
_HDFC_CC_OFFER = dict(bank_discount=50000, bank_discount_offer=("1523", "63566"))

DEFAULT_BOOK = OfferBook(issuers=(
    IssuerOffer(id="23", name="INDUSIND CC", issuer_type="CC_BANK", bank="INDUSIND", tenures=tuple(
        _t(str(i + 1), m, 16, _B1563) for i, m in enumerate((3, 6, 9, 12, 18, 24))), min_amount=300_000,
        max_amount=50_000_000),
    IssuerOffer(id="25", name="PNB CC", issuer_type="CC_BANK", bank="PNB", tenures=(
        _t("1", 3, 16, ("309", "20"), program_type="BRAND_EMI", brands=(_redmi("INSTANT"),)),
        _t("12", 36, 16, _B1562),
        _t("2", 6, 16, ("309", "20"), program_type="BRAND_EMI", brands=(_redmi("POST"),)),
        _t("3", 9, 16, ("309", "20"), program_type="BRAND_EMI", processing_fee=29900, brands=(_redmi("POST"),)),
        _t("4", 12, 16, _B1563),
        _t("5", 18, 16, _B1595),
        _t("6", 24, 16, _B1563),
    ), min_amount=1_500_000, max_amount=50_000_000),
    IssuerOffer(id="6", name="HDFC CC", issuer_type="CC_BANK", bank="HDFC", tenures=(
        _t("1", 3, 20, _B1564, **_HDFC_CC_OFFER),
        _t("2", 6, 20, _B1564, **_HDFC_CC_OFFER),
    ), min_amount=1_500_000, max_amount=50_000_000),
    IssuerOffer(id="7", name="HDFC DC", issuer_type="DC_BANK", bank="HDFC", tenures=(
        _t("1", 3, 16, _B1562),
        _t("2", 6, 16, _B1562),
    ), min_amount=300_000, max_amount=20_000_000),
    IssuerOffer(id="2", name="ICICI DC", issuer_type="DC_BANK", bank="ICICI", tenures=(
        _t("1", 3, 16, _B1562),
        _t("12", 36, 16, _B1562),
    ), min_amount=300_000, max_amount=20_000_000),
))
# the defaults reproduce the document for these order amounts (see the module docstring)
DEFAULT_OFFERS = DEFAULT_BOOK.issuers

#: Plural's own create-payment sample quotes HDFC DC's 3-month tenure on 1,200,000 paise at
#: 410,714 a month (total and net 1,232,142; interest 32,142) where the formula its discovery
#: samples follow gives 410,713. That one figure set is accepted by name, beside our own quote.
SAMPLE_EXCEPTIONS: dict[tuple[str, str, int], dict[str, int]] = {
    ("7", "1", 1_200_000): {"monthly_emi_amount": 410714, "total_emi_amount": 1232142,
                            "net_payment_amount": 1232142, "interest_amount": 32142},
}
