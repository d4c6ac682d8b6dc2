import re

import pytest

from orchestrator.plural import PluralClient, errors
from orchestrator.plural.models import Amount, CaptureRequest, CreateOrderRequest
from orchestrator.plural.requestor import Requestor, request_timestamp
from tests.plural.fakes import ORDER, ScriptedTransport, err, ok, requestor_kwargs


def client_with(transport, **extra):
    return PluralClient(Requestor(**requestor_kwargs(transport, **extra)))


def order_request():
    return CreateOrderRequest(merchant_order_reference="r1", order_amount=Amount(value=1100))


def test_every_call_carries_bearer_request_id_and_millisecond_timestamp():
    t = ScriptedTransport(ok(ORDER))
    client_with(t).get_order("v1-1-aa-x")
    req = t.api_requests[0]
    assert req.headers["Authorization"] == "Bearer tok-1"
    assert re.fullmatch(r"[0-9a-f-]{36}", req.headers["Request-ID"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", req.headers["Request-Timestamp"])


def test_request_timestamp_format_matches_plural_samples():
    assert request_timestamp(1720511828.022) == "2024-07-09T07:57:08.022Z"


def test_retries_reuse_the_request_id_of_the_logical_request():
    t = ScriptedTransport(err(503), err(502), ok(ORDER))
    client_with(t).create_order(order_request())
    ids = {r.headers["Request-ID"] for r in t.api_requests}
    assert len(t.api_requests) == 3 and len(ids) == 1


def test_token_is_fetched_once_and_reused():
    t = ScriptedTransport(ok(ORDER), ok(ORDER))
    c = client_with(t)
    c.get_order("a")
    c.get_order("b")
    assert t.token_calls == 1


def test_a_401_refreshes_the_token_once_and_retries():
    t = ScriptedTransport(err(401, "UNAUTHORIZED"), ok(ORDER))
    order = client_with(t).get_order("a")
    assert order.order_id == "v1-1-aa-x"
    assert t.token_calls == 2
    assert t.api_requests[1].headers["Authorization"] == "Bearer tok-2"


def test_a_second_401_is_raised_not_looped():
    t = ScriptedTransport(err(401, "UNAUTHORIZED"), err(401, "UNAUTHORIZED"))
    with pytest.raises(errors.AuthenticationFailed):
        client_with(t).get_order("a")
    assert t.token_calls == 2


def test_business_errors_are_not_retried_and_carry_code_status_and_request_id():
    t = ScriptedTransport(err(422, "PAYMENT_DECLINED", "declined"))
    with pytest.raises(errors.PaymentDeclined) as exc:
        client_with(t).create_order(order_request())
    assert len(t.api_requests) == 1
    e = exc.value
    assert (e.status, e.code, e.message) == (422, "PAYMENT_DECLINED", "declined")
    assert e.request_id == t.api_requests[0].headers["Request-ID"]


def test_cancel_is_not_repeated_after_a_timeout_the_outcome_is_unknown():
    t = ScriptedTransport(errors.OutcomeUnknown("read timeout"), ok(ORDER))
    with pytest.raises(errors.OutcomeUnknown) as exc:
        client_with(t).cancel_order("a")
    assert exc.value.may_have_reached_plural
    assert len(t.api_requests) == 1


def test_capture_with_its_reference_is_repeated_after_a_timeout():
    t = ScriptedTransport(errors.OutcomeUnknown("read timeout"), ok(ORDER))
    client_with(t).capture_order("a", CaptureRequest(merchant_capture_reference="cap-1"))
    assert len(t.api_requests) == 2


def test_submit_otp_is_not_repeated_after_a_server_error():
    t = ScriptedTransport(err(500))
    with pytest.raises(errors.ServerError):
        client_with(t).submit_otp("pay-1", "123456")
    assert len(t.api_requests) == 1


def test_connection_failure_before_sending_is_retried_for_any_call():
    t = ScriptedTransport(errors.ConnectionFailed("refused"), ok({"next": ["SUBMIT_OTP"]}))
    client_with(t).generate_otp("pay-1")
    assert len(t.api_requests) == 2


def test_gives_up_after_max_attempts_with_the_last_error():
    t = ScriptedTransport(err(503), err(503), err(503), ok(ORDER))
    with pytest.raises(errors.ServerError):
        client_with(t).get_order("a")
    assert len(t.api_requests) == 3


def test_retry_after_is_honoured():
    slept = []
    t = ScriptedTransport(err(429, "PAYMENT_RATE_LIMIT", headers={"Retry-After": "2"}), ok(ORDER))
    client_with(t, sleep=slept.append, rand=lambda: 0.0).get_order("a")
    assert slept == [2.0]


def test_non_json_success_is_a_format_error():
    from orchestrator.plural.transport import Response

    t = ScriptedTransport(Response(200, b"<html>", {}))
    with pytest.raises(errors.ResponseFormatError):
        client_with(t).get_order("a")


def test_path_segments_are_url_quoted():
    t = ScriptedTransport(ok(ORDER))
    client_with(t).get_order_by_reference("a/b c")
    assert t.api_requests[0].url.endswith("/api/pay/v1/orders/reference/a%2Fb%20c")


def test_a_retry_refused_after_an_unanswered_attempt_is_an_unknown_outcome_not_a_refusal():
    t = ScriptedTransport(errors.OutcomeUnknown("read timeout"), err(409, "DUPLICATE_REQUEST", "in progress"))
    with pytest.raises(errors.OutcomeUnknown):
        client_with(t).create_order(order_request())
    assert len(t.api_requests) == 2


def test_a_first_refusal_is_still_a_refusal():
    t = ScriptedTransport(err(409, "DUPLICATE_REQUEST", "in progress"))
    with pytest.raises(errors.Conflict):
        client_with(t).create_order(order_request())
