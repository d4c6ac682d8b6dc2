import time

import pytest

from orchestrator.plural.signatures import (
    SignatureError, callback_message, sign_callback, sign_webhook, verify_callback, verify_webhook, webhook_headers)

KEY = bytes.fromhex("73616e64626f78")


def test_webhook_signature_matches_plural_test_vector():
    assert sign_webhook(b"abc1234", "msg_2nEfCaUDn9fynC9Kz2upo1QSydl", 1728543028, b'{"payload":"payload"}') == (
        "v1,Ns46HrH+Nfu9dZtBUVvSLyrOD5JH0SAGlNo3M5yobfQ=")


def test_fresh_webhook_verifies_and_tampered_body_does_not():
    body = b'{"event_type":"ORDER_AUTHORIZED","data":{}}'
    headers = webhook_headers(b"secret", "msg_1", int(time.time()), body)
    verify_webhook(b"secret", body, headers)
    with pytest.raises(SignatureError):
        verify_webhook(b"secret", body.replace(b"AUTH", b"FAIL"), headers)
    with pytest.raises(SignatureError):
        verify_webhook(b"other", body, headers)


def test_webhook_older_than_five_minutes_is_refused():
    body = b"{}"
    headers = webhook_headers(b"secret", "msg_1", int(time.time()) - 301, body)
    with pytest.raises(SignatureError):
        verify_webhook(b"secret", body, headers)


def test_missing_or_malformed_webhook_headers_are_refused():
    with pytest.raises(SignatureError):
        verify_webhook(b"secret", b"{}", {})
    with pytest.raises(SignatureError):
        verify_webhook(b"secret", b"{}", {"webhook-id": "a", "webhook-timestamp": str(int(time.time())),
                                          "webhook-signature": "garbage"})


def test_several_signatures_in_one_header_any_may_match():
    body = b"{}"
    ts = int(time.time())
    good = webhook_headers(b"secret", "m", ts, body)
    good["webhook-signature"] = "v1,AAAA " + good["webhook-signature"]
    verify_webhook(b"secret", body, good)


def test_callback_message_sorts_keys_and_skips_signature():
    fields = {"status": "FAILED", "order_id": "o1", "error_message": "Consumer Authentication required",
              "error_code": "USER_AUTHENTICATION_FAILED", "signature": "x"}
    assert callback_message(fields) == ("error_code=USER_AUTHENTICATION_FAILED&error_message=Consumer "
                                        "Authentication required&order_id=o1&status=FAILED")


def test_callback_signature_is_uppercase_hex_hmac_with_hex_key_and_detects_tampering():
    fields = {"order_id": "v1-4405071524-aa-qlAtAf", "status": "AUTHORIZED"}
    sig = sign_callback(fields, KEY)
    assert sig == sig.upper() and len(sig) == 64
    verify_callback({**fields, "signature": sig}, KEY)
    with pytest.raises(SignatureError):
        verify_callback({**fields, "status": "PROCESSED", "signature": sig}, KEY)
    with pytest.raises(SignatureError):
        verify_callback(fields, KEY)


def test_callback_signature_covers_whatever_keys_arrived():
    fields = {"order_id": "o", "payment_status": "AUTHORIZED"}
    verify_callback({**fields, "signature": sign_callback(fields, KEY)}, KEY)
