"""Plural refusing our client credentials at the token call is ``CredentialsRejected`` (a
configuration fault), never a business refusal; a shared flag says since when, until a token is had."""

from __future__ import annotations

import fakeredis
import pytest

from orchestrator.plural import errors
from orchestrator.plural.requestor import Requestor
from orchestrator.plural.token import RedisTokenStore
from tests.plural.fakes import ORDER, err, ok, requestor_kwargs

KEY = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="


class TokenDesk:
    """Answers the token call with ``token_answers`` in turn (the last one stays), any other call with ORDER."""

    def __init__(self, *token_answers):
        self.token_answers = list(token_answers)
        self.api_calls = 0

    def send(self, request):
        if request.url.endswith("/api/auth/v1/token"):
            answer = self.token_answers[0] if len(self.token_answers) == 1 else self.token_answers.pop(0)
            return answer
        self.api_calls += 1
        return ok(ORDER)


GOOD = ok({"access_token": "tok", "expires_at": "2999-01-01T00:00:00.000Z"})
REFUSED = err(422, "UNAUTHORIZED", "invalid client credentials")


@pytest.mark.parametrize("status", [422, 401])
def test_a_refused_token_call_is_credentials_rejected_not_a_business_error(status):
    desk = TokenDesk(err(status, "UNAUTHORIZED", "invalid client credentials"))
    r = Requestor(**requestor_kwargs(desk))
    with pytest.raises(errors.CredentialsRejected) as raised:
        r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    assert not isinstance(raised.value, errors.APIError)
    assert raised.value.status == status and raised.value.code == "CREDENTIALS_REJECTED"
    assert desk.api_calls == 0  # the call that wanted the token was never sent


def test_a_422_on_any_other_call_stays_a_business_error():
    class Refusing(TokenDesk):
        def send(self, request):
            if request.url.endswith("/api/auth/v1/token"):
                return GOOD
            return err(422, "PAYMENT_DECLINED", "no")

    r = Requestor(**requestor_kwargs(Refusing()))
    with pytest.raises(errors.PaymentDeclined):
        r.request("POST", "/api/pay/v1/orders/x/payments", {}, replay_safe=False)


def test_a_server_error_on_the_token_call_is_not_a_credentials_fault():
    r = Requestor(**requestor_kwargs(TokenDesk(err(500))))
    with pytest.raises(errors.ServerError):
        r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)


def test_the_flag_says_since_when_and_the_first_token_clears_it():
    now = [1000.0]
    desk = TokenDesk(REFUSED, REFUSED, GOOD)
    r = Requestor(**requestor_kwargs(desk, clock=lambda: now[0]))
    assert r.tokens.rejected_since() is None
    with pytest.raises(errors.CredentialsRejected) as first:
        r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    now[0] = 1030.0
    with pytest.raises(errors.CredentialsRejected) as second:
        r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    assert first.value.since == second.value.since == 1000.0 == r.tokens.rejected_since()
    now[0] = 1060.0
    r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    assert r.tokens.rejected_since() is None


def test_every_process_sharing_the_redis_store_sees_the_flag():
    redis = fakeredis.FakeRedis()
    refused = Requestor(**requestor_kwargs(TokenDesk(REFUSED), token_store=RedisTokenStore(redis, "cid", KEY)))
    other = Requestor(**requestor_kwargs(TokenDesk(GOOD), token_store=RedisTokenStore(redis, "cid", KEY)))
    with pytest.raises(errors.CredentialsRejected):
        refused.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    assert other.tokens.rejected_since() is not None
    other.request("GET", "/api/pay/v1/orders/x", replay_safe=True)  # the secret was fixed there
    assert refused.tokens.rejected_since() is None


def test_after_a_refusal_the_process_waits_a_moment_before_asking_again():
    now = [1000.0]
    asked = []

    class Counting(TokenDesk):
        def send(self, request):
            if request.url.endswith("/api/auth/v1/token"):
                asked.append(now[0])
            return super().send(request)

    r = Requestor(**requestor_kwargs(Counting(REFUSED, REFUSED, GOOD), clock=lambda: now[0]))
    for _ in range(5):  # many waiting steps at once
        with pytest.raises(errors.CredentialsRejected):
            r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    assert asked == [1000.0]
    now[0] = 1002.5
    with pytest.raises(errors.CredentialsRejected):
        r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    now[0] = 1005.0
    r.request("GET", "/api/pay/v1/orders/x", replay_safe=True)
    assert asked == [1000.0, 1002.5, 1005.0]
