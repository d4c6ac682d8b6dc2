"""The merchant API over FastAPI's test client, with the real service, database, vault and sandbox."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from orchestrator.entrypoints.api.app import create_app

KEY = "test-api-key"
CARD = {"number": "4012 0010 3714 1112", "name": "Kevin Bob", "cvv": "123", "expiry_month": "12",
        "expiry_year": "2030"}


@pytest.fixture
def api(harness):
    app = create_app(lambda: harness.service, KEY)
    with TestClient(app) as client:
        client.headers["X-API-Key"] = KEY
        yield client


def body(**overrides):
    out = {"merchant_order_reference": f"ord-{uuid.uuid4().hex[:12]}", "amount": {"value": 110000, "currency": "INR"},
           "pre_auth": False, "payment_method": "CARD", "card": dict(CARD)}
    out.update(overrides)
    return out


def test_missing_or_wrong_api_key_is_401(api):
    for headers in ({"X-API-Key": ""}, {"X-API-Key": "nope"}):
        answer = api.post("/v1/checkouts", json=body(), headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"


def test_create_returns_202_with_the_checkout_and_enqueues_its_first_step(api, harness):
    answer = api.post("/v1/checkouts", json=body())
    assert answer.status_code == 202
    data = answer.json()
    assert data["status"] == "PROCESSING" and data["amount"] == {"value": 110000, "currency": "INR"}
    assert data["card"] == {"last4": "1112", "network": "VISA"}
    assert [(s.value, i) for s, i in harness.queue] == [("create_order", data["id"])]


def test_same_reference_twice_returns_the_same_checkout(api, harness):
    first = api.post("/v1/checkouts", json=(b := body())).json()
    second = api.post("/v1/checkouts", json=b)
    assert second.status_code == 200 and second.json()["id"] == first["id"]
    assert len(harness.queue) == 1


def test_same_reference_with_a_different_amount_is_a_conflict(api):
    b = body()
    api.post("/v1/checkouts", json=b)
    answer = api.post("/v1/checkouts", json={**b, "amount": {"value": 1, "currency": "INR"}})
    assert answer.status_code == 409 and answer.json()["code"] == "REFERENCE_CONFLICT"


@pytest.mark.parametrize("change", [
    {"amount": {"value": 0, "currency": "INR"}},
    {"amount": {"value": -100, "currency": "INR"}},
    {"amount": {"value": 10.5, "currency": "INR"}},
    {"amount": {"value": "100", "currency": "INR"}},
    {"amount": {"value": 100, "currency": "ABC"}},
    {"amount": None},
    {"card": {**CARD, "number": "4012001037141113"}},
    {"card": {**CARD, "number": "1234"}},
    {"card": {**CARD, "cvv": "12"}},
    {"card": {**CARD, "expiry_year": "2020"}},
    {"card": {**CARD, "expiry_month": "13"}},
    {"card": None},
    {"payment_method": "UPI"},
    {"merchant_order_reference": "has spaces!"},
    {"pre_auth": "yes"},
])
def test_bad_input_is_a_4xx_with_a_code_and_nothing_is_stored(api, harness, change):
    b = {k: v for k, v in {**body(), **change}.items() if v is not None}
    answer = api.post("/v1/checkouts", json=b)
    assert 400 <= answer.status_code < 500
    data = answer.json()
    assert data["code"] in ("INVALID_REQUEST", "INVALID_CARD") and data["message"]
    assert "4012001037141113" not in answer.text and '"12"' not in answer.text
    assert harness.queue == []
    assert harness.deps.repo.by_reference(b["merchant_order_reference"]) is None


def test_unknown_checkout_is_404(api):
    answer = api.get("/v1/checkouts/chk_nothere")
    assert answer.status_code == 404 and answer.json()["code"] == "CHECKOUT_NOT_FOUND"


def test_otp_flow_through_the_api(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    harness.drain()
    waiting = api.get(f"/v1/checkouts/{created['id']}").json()
    assert waiting["status"] == "AWAITING_OTP"
    assert waiting["next_action"]["type"] == "SUBMIT_OTP" and waiting["next_action"]["resend_after"] >= 0
    assert api.post(f"/v1/checkouts/{created['id']}/otp", json={"otp": "123456"}).status_code == 202
    harness.drain()
    done = api.get(f"/v1/checkouts/{created['id']}").json()
    assert done["status"] == "COMPLETED" and done["captured_amount"]["value"] == 110000
    assert done["plural_order_id"].startswith("v1-")
    assert [h["to"] for h in done["history"]][-1] == "COMPLETED"
    assert done["next_action"] is None


def test_actions_not_allowed_in_the_current_state_are_409(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    answer = api.post(f"/v1/checkouts/{created['id']}/otp", json={"otp": "123456"})
    assert answer.status_code == 409 and answer.json()["code"] == "INVALID_STATE"
    harness.drain()
    api.post(f"/v1/checkouts/{created['id']}/otp", json={"otp": "123456"})
    harness.drain()
    answer = api.post(f"/v1/checkouts/{created['id']}/cancel")
    assert answer.status_code == 409 and answer.json()["status"] == "COMPLETED"


def test_resend_too_early_says_how_long_to_wait(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    harness.drain()
    answer = api.post(f"/v1/checkouts/{created['id']}/otp/resend")
    assert answer.status_code == 409
    assert answer.json()["code"] == "RESEND_TOO_EARLY" and 0 < answer.json()["retry_after"] <= 1


def test_resend_after_the_wait_is_accepted(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    harness.drain()
    harness.clock.advance(2)
    import time

    time.sleep(1.05)  # the sandbox keeps real time
    assert api.post(f"/v1/checkouts/{created['id']}/otp/resend").status_code == 202
    harness.drain()
    row = harness.deps.repo.get(created["id"])
    assert row.error_code is None and [a.outcome for a in harness.deps.repo.attempts(row.id, "resend_otp")] == [
        "succeeded"]


def test_cancel_is_accepted_and_idempotent(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    harness.drain()
    assert api.post(f"/v1/checkouts/{created['id']}/cancel").json()["status"] == "CANCELLING"
    assert api.post(f"/v1/checkouts/{created['id']}/cancel").status_code == 202
    harness.drain()
    assert api.get(f"/v1/checkouts/{created['id']}").json()["status"] == "CANCELLED"


def test_otp_must_be_digits(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    answer = api.post(f"/v1/checkouts/{created['id']}/otp", json={"otp": "abc"})
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST"


def test_openapi_is_published(api):
    spec = api.get("/openapi.json").json()
    assert "/v1/checkouts" in spec["paths"] and api.get("/docs").status_code == 200


def test_openapi_says_which_routes_need_the_api_key(api):
    spec = api.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the merchant's API key (ORCHESTRATOR_API_KEY)"}
    operations = [(path, op) for path, item in spec["paths"].items() for op in item.values()]
    assert all(op.get("security") == [{"ApiKey": []}] for path, op in operations if path.startswith("/v1/"))
    assert not any(op.get("security") for path, op in operations if not path.startswith("/v1/"))


def test_an_otp_answer_is_the_checkout_as_the_submission_wrote_it(api, harness):
    created = api.post("/v1/checkouts", json=body()).json()
    harness.drain()
    answer = api.post(f"/v1/checkouts/{created['id']}/otp", json={"otp": "123456"})
    assert answer.status_code == 202
    shown = answer.json()
    assert shown["status"] == "PROCESSING" and shown["history"][-1]["to"] == "VERIFYING_OTP"
    assert shown == api.get(f"/v1/checkouts/{created['id']}").json()


def test_delivery_and_refund_endpoints(api, harness):
    created = api.post("/v1/checkouts", json=body(pre_auth=True)).json()
    harness.drain()
    api.post(f"/v1/checkouts/{created['id']}/otp", json={"otp": "123456"})
    harness.drain()
    too_much = api.post(f"/v1/checkouts/{created['id']}/delivery",
                        json={"capture_amount": {"value": 110001, "currency": "INR"}})
    assert too_much.status_code == 422 and too_much.json()["code"] == "CAPTURE_EXCEEDS_AUTHORIZED"
    wrong_currency = api.post(f"/v1/checkouts/{created['id']}/delivery",
                              json={"capture_amount": {"value": 100, "currency": "USD"}})
    assert wrong_currency.status_code == 400
    early_refund = api.post(f"/v1/checkouts/{created['id']}/refunds", json={})
    assert early_refund.status_code == 409 and early_refund.json()["code"] == "INVALID_STATE"
    delivered = api.post(f"/v1/checkouts/{created['id']}/delivery", json={
        "capture_amount": {"value": 100000, "currency": "INR"}})
    assert delivered.status_code == 202 and delivered.json()["status"] == "CAPTURING"
    harness.drain()
    done = api.get(f"/v1/checkouts/{created['id']}").json()
    assert done["status"] == "COMPLETED" and done["captured_amount"]["value"] == 100000
    over = api.post(f"/v1/checkouts/{created['id']}/refunds", json={"amount": {"value": 100001, "currency": "INR"}})
    assert over.status_code == 422 and over.json()["refundable"]["value"] == 100000
    made = api.post(f"/v1/checkouts/{created['id']}/refunds", json={"amount": {"value": 40000, "currency": "INR"},
                                                                     "merchant_refund_reference": "api-refund-1"})
    assert made.status_code == 202 and made.json()["merchant_refund_reference"] == "api-refund-1"
    repeat = api.post(f"/v1/checkouts/{created['id']}/refunds", json={"amount": {"value": 40000, "currency": "INR"},
                                                                       "merchant_refund_reference": "api-refund-1"})
    assert repeat.status_code == 200 and repeat.json()["id"] == made.json()["id"]
    harness.drain()
    listed = api.get(f"/v1/checkouts/{created['id']}/refunds").json()["refunds"]
    assert [(r["amount"]["value"], r["status"]) for r in listed] == [(40000, "PROCESSED")]
    assert api.get(f"/v1/checkouts/{created['id']}").json()["refunded_amount"]["value"] == 40000


def test_readiness_is_503_naming_what_is_down(harness):
    app = create_app(lambda: harness.service, KEY,
                     readiness=lambda full=True: {"database": "ok", "redis": "ConnectionError"})
    with TestClient(app) as client:
        answer = client.get("/ready")
    assert answer.status_code == 503 and answer.json()["checks"]["redis"] == "ConnectionError"


# --- EMI ----------------------------------------------------------------------------------

EMI_DEBIT = {"number": "4690478199123123", "registered_mobile_number": "9876543210"}


def test_offer_discovery_answers_plurals_issuers_over_http(api):
    answer = api.post("/v1/offers/discovery", json={"amount": {"value": 1200000, "currency": "INR"}})
    assert answer.status_code == 200
    tenure = answer.json()["issuers"][0]["tenures"][0]
    assert '"interest_rate_percentage":16,' in answer.text.replace(" ", "")
    assert tenure["monthly_emi_amount"] == {"currency": "INR", "value": 410713}


def test_offer_discovery_with_impossible_products_is_400(api):
    answer = api.post("/v1/offers/discovery", json={
        "amount": {"value": 1000, "currency": "INR"},
        "product_details": [{"product_code": "x", "product_amount": {"value": 1001, "currency": "INR"}}]})
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST"
    assert "exceeds the order amount" in answer.json()["message"]


def test_an_emi_checkout_starts_by_checking_its_offer(api, harness):
    answer = api.post("/v1/checkouts", json=body(
        payment_method="DEBIT_EMI", amount={"value": 1200000, "currency": "INR"}, card=dict(EMI_DEBIT),
        emi={"issuer_id": "7", "tenure_id": "1", "expected_monthly_emi": {"value": 410713, "currency": "INR"}}))
    assert answer.status_code == 202, answer.text
    data = answer.json()
    assert data["payment_method"] == "DEBIT_EMI" and data["emi"]["offer"] is None
    assert [(s.value, i) for s, i in harness.queue] == [("check_offer", data["id"])]


def test_a_debit_emi_without_the_registered_mobile_is_400_and_creates_nothing(api, harness):
    answer = api.post("/v1/checkouts", json=body(
        payment_method="DEBIT_EMI", amount={"value": 1200000, "currency": "INR"},
        card={"number": "4690478199123123"}, emi={"issuer_id": "7", "tenure_id": "1"}))
    assert answer.status_code == 400 and "registered_mobile_number" in answer.json()["message"]
    assert harness.queue == []


def test_readiness_reports_but_does_not_fail_on_the_token_or_the_backlog(harness):
    app = create_app(lambda: harness.service, KEY, readiness=lambda full=True: {
        "database": "ok", "redis": "ok", "token": "expired", "outbox": {"pending": 9000}})
    with TestClient(app) as client:
        answer = client.get("/ready")
    assert answer.status_code == 200 and answer.json()["checks"]["token"] == "expired"


def test_a_time_is_shown_as_its_instant_in_utc():
    import datetime as dt
    from zoneinfo import ZoneInfo

    from orchestrator.outbound.views import iso

    assert iso(dt.datetime(2026, 11, 23, 17, 5, tzinfo=ZoneInfo("Asia/Kolkata"))) == "2026-11-23T11:35:00Z"
    assert iso(dt.datetime(2026, 11, 23, 11, 35)) == "2026-11-23T11:35:00Z"  # SQLite's, naive: UTC


# --- issue 22, item 12: operations endpoints behind a credential outside the sandbox --------------

CHECKS = {"database": "ok", "redis": "ok", "token": "ok"}


def ops_client(harness, **kwargs):
    return TestClient(create_app(lambda: harness.service, KEY, readiness=lambda full=True: dict(CHECKS), **kwargs))


def test_with_a_metrics_token_metrics_and_readiness_details_want_it(harness):
    with ops_client(harness, metrics_token="scrape-me", ops_public=False) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY}):
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"
            assert answer.headers["WWW-Authenticate"] == "Bearer"
            assert client.get("/ready", headers=headers).json() == {"status": "ok"}
        good = {"Authorization": "Bearer scrape-me"}
        scraped = client.get("/metrics", headers=good)
        assert scraped.status_code == 200 and "# TYPE" in scraped.text
        assert client.get("/ready", headers=good).json()["checks"] == CHECKS


def test_without_a_token_outside_the_sandbox_metrics_are_off_and_readiness_says_only_its_status(harness):
    with ops_client(harness, ops_public=False) as client:
        assert client.get("/metrics").status_code == 404
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json() == {"status": "ok"}


def test_in_the_sandbox_metrics_and_readiness_stay_open(harness):
    with ops_client(harness) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/ready").json()["checks"] == CHECKS


def test_docs_and_the_openapi_document_can_be_switched_off(harness):
    with TestClient(create_app(lambda: harness.service, KEY, docs=False)) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path


def test_an_anonymous_readiness_probe_asks_for_the_two_pings_only(harness):
    asked = []

    def readiness(full=True):
        asked.append(full)
        return {"database": "ok", "redis": "ok"}

    with TestClient(create_app(lambda: harness.service, KEY, readiness=readiness, ops_public=False)) as client:
        assert client.get("/ready").json() == {"status": "ok"}
    assert asked == [False]


def test_the_runtimes_short_readiness_pings_the_database_and_redis_and_nothing_else(monkeypatch):
    from orchestrator.store import reports
    from orchestrator.entrypoints.runtime import Runtime

    monkeypatch.setattr(reports, "overview", lambda *a, **k: pytest.fail("the backlog was queried"))
    rt = Runtime.__new__(Runtime)
    rt.repo = type("R", (), {"read_engine": __import__("sqlalchemy").create_engine("sqlite://")})()
    rt.redis = type("Redis", (), {"ping": lambda self: True, "llen": lambda self, q: pytest.fail("queues read")})()
    assert rt.readiness(full=False) == {"database": "ok", "redis": "ok"}
