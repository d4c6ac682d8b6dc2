from orchestrator.plural import errors


def test_error_class_by_status_and_code():
    assert errors.error_class(400, "INVALID_REQUEST") is errors.InvalidRequest
    assert errors.error_class(401, None) is errors.AuthenticationFailed
    assert errors.error_class(404, "ORDER_NOT_FOUND") is errors.NotFound
    assert errors.error_class(409, "DUPLICATE_REQUEST") is errors.Conflict
    assert errors.error_class(422, "PAYMENT_DECLINED") is errors.PaymentDeclined
    assert errors.error_class(422, "CARD_EXPIRED") is errors.PaymentDeclined
    assert errors.error_class(422, "SOMETHING", otp_call=True) is errors.OTPRejected
    assert errors.error_class(422, "OFFER_NOT_ELIGIBLE") is errors.OfferNotEligible
    assert errors.error_class(429, None) is errors.RateLimited
    assert errors.error_class(503, None) is errors.ServerError


def test_parse_error_body_handles_plural_three_shapes():
    assert errors.parse_error_body({"code": "INVALID_REQUEST", "message": "bad",
                                    "additional_error_details": {"reason": "x"}}) == (
        "INVALID_REQUEST", "bad", {"reason": "x"})
    assert errors.parse_error_body({"error": "invalid_client", "error_description": "nope"})[:2] == (
        "invalid_client", "nope")
    code, message, details = errors.parse_error_body({"status": "UNAUTHORIZED", "message": "m", "traceId": "t1"})
    assert (code, message, details["trace_id"]) == ("UNAUTHORIZED", "m", "t1")
    assert errors.parse_error_body("<html>")[0] is None


def test_unknown_outcomes_say_plural_may_have_acted():
    assert errors.OutcomeUnknown("x").may_have_reached_plural
    assert not errors.ConnectionFailed("x").may_have_reached_plural
    assert errors.ServerError("x", status=500).may_have_reached_plural
    assert not errors.PaymentDeclined("x", status=422).may_have_reached_plural
