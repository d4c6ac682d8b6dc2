"""Every sample request and response in Plural's documents parses into our models."""

import pytest

from orchestrator.plural import models as m
from tests.seeds import all_samples


def classify(sample: dict) -> type:
    keys = set(sample)
    if "client_id" in keys:
        return m.TokenRequest
    if "access_token" in keys:
        return m.TokenResponse
    if "data" in keys:
        return m.OrderEnvelope
    if "payments" in keys:
        return m.CreatePaymentRequest
    if "card_details" in keys:
        return m.CardDetailsRequest
    if "card_payment_details" in keys:
        return m.CardDetailsResponse
    if keys == {"payment_id", "otp"}:
        return m.SubmitOTPRequest
    if keys == {"payment_id"}:
        return m.OTPRequest
    if "next" in keys or keys == {"status"}:
        return m.OTPResponse
    if "signature" in keys:
        return m.CallbackFields
    if "merchant_capture_reference" in keys:
        return m.CaptureRequest
    if "issuers" in keys:
        return m.OfferDiscoveryResponse
    if "offer_data" in keys:
        return m.OfferValidationRequest
    if "merchant_order_reference" in keys:
        return m.CreateOrderRequest
    if "order_amount" in keys:
        return m.OfferDiscoveryRequest
    if "code" in keys:
        return m.OfferValidationResponse
    raise AssertionError(f"unclassified sample {sorted(keys)}")


SAMPLES = all_samples()


def test_the_documents_hold_all_the_expected_samples():
    kinds = {classify(s) for s in SAMPLES}
    assert len(SAMPLES) == 47
    assert len(kinds) == 16


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_sample_parses_and_keeps_every_field(index):
    sample = SAMPLES[index]
    model = classify(sample).model_validate(sample)
    dumped = model.model_dump(mode="json", exclude_none=True)
    # nothing in the sample was lost (extra fields are kept, numbers-as-strings become strings)
    for key in sample:
        assert key in dumped, key


def test_integer_merchant_order_reference_becomes_a_string():
    req = m.CreateOrderRequest.model_validate(next(s for s in SAMPLES if s.get("merchant_order_reference") == 112345))
    assert req.merchant_order_reference == "112345"


def test_card_data_is_hidden_in_repr_but_sent_on_the_wire():
    sample = next(s for s in SAMPLES if "payments" in s and s["payments"][0]["payment_method"] == "CARD")
    req = m.CreatePaymentRequest.model_validate(sample)
    assert "2870" not in repr(req) and "235" not in repr(req)
    wire = req.wire()["payments"][0]["payment_option"]["card_details"]
    assert wire["card_number"] == "2870-2870-2870-2870" and wire["cvv"] == "235"


def test_unknown_fields_are_kept():
    order = m.Order.model_validate({"order_id": "o", "status": "CREATED", "brand_new_field": {"x": 1}})
    assert order.model_dump()["brand_new_field"] == {"x": 1}


def test_otp_resend_after_is_read_as_seconds():
    assert m.OTPResponse.model_validate({"next": ["SUBMIT_OTP"], "meta_data": {"resend_after": "180"}}
                                        ).resend_after_seconds == 180


def test_token_expiry_from_expires_in_or_expires_at():
    assert m.TokenResponse(access_token="t", expires_in=3600).expiry_epoch(1000.0) == 4600.0
    at = m.TokenResponse.model_validate({"access_token": "t", "expires_at": "2024-08-28T15:00:12.213Z"})
    assert at.expiry_epoch(0) == pytest.approx(1724857212.213)


def test_captured_amount_sums_capture_data():
    env = m.OrderEnvelope.model_validate(next(s for s in SAMPLES if "data" in s and s["data"]["status"] == "PROCESSED"
                                              and s["data"]["payments"][0].get("capture_data")))
    assert env.data.captured_amount() == 1100
