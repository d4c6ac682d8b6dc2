import json
import logging

import structlog

from orchestrator.domain.ids import new_id
from orchestrator.telemetry.logs import configure_logging, mask_card_numbers, redact_card_data


def test_plain_card_number_is_masked_to_last_four():
    assert mask_card_numbers("card 4012001037141112 used") == "card ****1112 used"


def test_card_number_with_spaces_or_dashes_is_masked():
    assert mask_card_numbers("2870-2870-2870-2870") == "****2870"
    assert mask_card_numbers("4012 0010 3714 1112") == "****1112"


def test_twelve_and_nineteen_digit_runs_are_masked_eleven_is_not():
    assert mask_card_numbers("123456789012") == "****9012"
    assert mask_card_numbers("1234567890123456789") == "****6789"
    assert mask_card_numbers("12345678901") == "12345678901"


def test_plural_identifiers_stay_readable():
    text = "order v1-250129053005-aa-imFYK2 payment v1-250129053005-aa-imFYK2-de-a"
    assert mask_card_numbers(text) == text


def test_cvv_fields_are_dropped_at_any_depth_whatever_the_key():
    event = {"event": "x", "cvv": "123", "card": {"CVV": "999", "nested": [{"card_cvv": "1"}]}}
    out = redact_card_data(None, "info", event)
    dumped = json.dumps(out)
    assert "cvv" not in dumped.lower()
    assert "999" not in dumped


def test_card_number_fields_and_integers_are_masked():
    out = redact_card_data(None, "info", {"card_number": "4111 1111 1111 1111", "pan": 4111111111111111,
                                         "nested": {"text": "pay with 5555555555554444"}})
    assert out["card_number"] == "****1111"
    assert out["pan"] == "****1111"
    assert out["nested"]["text"] == "pay with ****4444"


def test_stdlib_and_structlog_lines_are_masked_on_the_way_out(capsys):
    configure_logging("INFO", "json", force=True)
    try:
        logging.getLogger("some.library").warning("charging 4012001037141112 cvv=123")
        structlog.get_logger("ours").info("payment", card="4012001037141112", cvv="321")
        err = capsys.readouterr().err
        assert "4012001037141112" not in err
        assert "****1112" in err
        # the CVV, not a timestamp or a port that happens to hold its digits
        (payment,) = [json.loads(line) for line in err.splitlines() if '"payment"' in line]
        assert "321" not in json.dumps({k: v for k, v in payment.items() if k not in ("timestamp", "ts")})
    finally:
        configure_logging("WARNING", "console", force=True)


# --- the holes of issue 8, finding 6 --------------------------------------------------------

import pytest  # noqa: E402

from orchestrator.telemetry.logs import mask_text  # noqa: E402


@pytest.mark.parametrize("text,leaked", [
    ("x4012001037141112", "4012001037141112"),
    ("card_number%3D4012001037141112&x=1", "4012001037141112"),
    ("4012001037141112_12_30", "4012001037141112"),
    ("4012.0010.3714.1112", "4012.0010.3714"),
    ("pan:4012001037141112.", "4012001037141112"),
])
def test_a_card_number_glued_to_anything_is_masked(text, leaked):
    masked = mask_text(text)
    assert leaked not in masked and "1112" in masked


@pytest.mark.parametrize("text", ["cvv=123", "CVV: 123", '"cvv": "1234"', "the cvc 321 was wrong",
                                  "security code 456"])
def test_a_cvv_in_free_text_is_hidden(text):
    assert not any(d in mask_text(text) for d in ("123", "1234", "321", "456"))


def test_a_validation_errors_input_value_is_hidden():
    text = "String should match pattern [type=string_pattern_mismatch, input_value='987', input_type=str]"
    assert "987" not in mask_text(text) and "input_value=***" in mask_text(text)


def test_bytes_and_exceptions_in_a_log_event_are_masked():
    out = redact_card_data(None, "info", {"body": b'{"card_number": "4012001037141112"}',
                                         "error": ValueError("bad card 4012001037141112")})
    assert "4012001037141112" not in json.dumps(out, default=str)


def test_plural_error_text_is_masked_before_it_is_stored(harness):
    """A refusal whose message quotes the card is stored and shown masked."""
    from orchestrator.domain.saga import Step
    from orchestrator.plural import errors
    from orchestrator.saga import runner

    from tests.saga.test_steps import received

    h = harness
    c = received(h)

    class Echoing:
        def __getattr__(self, name):
            return getattr(h.deps.plural, name)

        def create_order(self, request):
            raise errors.InvalidRequest("card 4012001037141112 cvv=123 refused", status=400, code="INVALID_REQUEST")

    plural, h.deps.plural = h.deps.plural, Echoing()
    try:
        h.queue.clear()
        runner.run(h.deps, Step.CREATE_ORDER, c.id, "t")
    finally:
        h.deps.plural = plural
    row = h.deps.repo.get(c.id)
    stored = " ".join([row.error_message or ""] + [a.detail or "" for a in h.deps.repo.attempts(c.id)])
    assert "4012001037141112" not in stored and "123" not in stored.replace("****1112", "")
    assert "****1112" in row.error_message
    assert "4012001037141112" not in json.dumps(h.service.view(row))


# --- identifiers survive, card numbers do not (issue 23: a request id must stay matchable) ---
import re  # noqa: E402
import uuid  # noqa: E402

from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def test_the_request_id_of_a_plural_error_stays_readable():
    rid = "17d41f45-5eea-4953-8712-0825c11b36c1"  # 4953-8712-0825 once read as a card
    assert mask_text(f"request_id={rid} failed") == f"request_id={rid} failed"


def test_a_digit_before_a_uuid_does_not_eat_into_it():
    rid = "38536863-8495-f1c2-7b7f-2e21649501c5"  # "0 38536863-8495" once read as a 13-digit run
    assert mask_text(f"0 {rid}") == f"0 {rid}"


def test_a_card_number_glued_to_a_uuid_is_masked_whole():
    text = "4111111111111111-8495-f1c2-7b7f-2e21649501c5"
    assert "41111111" not in mask_text(text)
    assert "411111111111111138536863" not in mask_text("4111111111111111" + "38536863-8495-f1c2-7b7f-2e21649501c5")


@hsettings(max_examples=300, deadline=None)
@given(st.uuids(), st.text(max_size=20), st.text(max_size=20))
def test_any_uuid_survives_masking(value: uuid.UUID, before: str, after: str):
    text = f"{before} {value} {after}"
    assert str(value) in mask_text(text)


@hsettings(max_examples=300, deadline=None)
@given(st.integers(min_value=11, max_value=18).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
       st.text(max_size=30), st.text(max_size=30))
def test_any_luhn_valid_card_number_inside_any_text_is_masked(body: str, before: str, after: str):
    number = _luhn_complete(body)
    assert number not in mask_text(before + number + after)


@hsettings(max_examples=300, deadline=None)
@given(st.uuids())
def test_our_ids_and_references_stay_readable(value: uuid.UUID):
    for text in (f"rfd_{value.hex}", f"orch-refund-{value.hex}", f"chk_{value.hex}"):
        runs = re.findall(r"\d+", value.hex)
        if any(c in "abcdef" for c in value.hex) and not any(_could_hold_a_card(r) for r in runs):
            assert mask_text(f"refund {text} failed") == f"refund {text} failed"


def _could_hold_a_card(run: str) -> bool:
    stretches = (run[i : i + n] for n in range(13, 20) for i in range(len(run) - n + 1))
    return len(run) > 19 or any(_luhn_valid(s) for s in stretches)


def _luhn_valid(digits: str) -> bool:
    return _luhn_complete(digits[:-1]) == digits


def test_an_id_we_mint_stays_readable():
    for prefix in ("chk_", "rfd_", "evt_"):
        for _ in range(500):
            value = new_id(prefix)
            assert mask_text(f"{value} (reference orch-refund-{value[4:]})") == \
                f"{value} (reference orch-refund-{value[4:]})"


def test_a_card_number_glued_to_a_digit_inside_hex_is_masked():
    assert "4111111111111111" not in mask_text("id a54111111111111111bcdefabcdefabc end")


def test_a_card_number_glued_into_hex_is_still_masked():
    assert "4111111111111111" not in mask_text("id abcdef4111111111111111abcdefabcd end")


def test_log_lines_go_to_the_stderr_of_the_moment_not_a_closed_one(monkeypatch):
    import io
    import sys

    configure_logging(force=True)
    gone = io.StringIO()
    monkeypatch.setattr(sys, "stderr", gone)
    gone.close()  # the stream logging was configured with is closed (a finished capture)
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    logging.getLogger("test").warning("after.swap")
    assert "after.swap" in now.getvalue() and "Logging error" not in now.getvalue()


@pytest.mark.parametrize("module", ["devkit.sandbox.app", "devkit.sandbox.webhooks"])
def test_the_sandboxs_own_loggers_are_masked_by_the_process_configuration(module, capsys):
    """The sandbox logs through structlog directly (it imports nothing of the orchestrator): the
    masking is the process's configuration, done by whoever starts it."""
    import importlib

    configure_logging("INFO", "json", force=True)
    try:
        importlib.import_module(module).log.warning("sandbox.event", detail="card 4012001037141112", cvv="321")
        err = capsys.readouterr().err
        (line,) = [json.loads(line) for line in err.splitlines() if "sandbox.event" in line]
        assert "4012001037141112" not in err and "****1112" in line["detail"]
        assert "cvv" not in line
    finally:
        configure_logging("WARNING", "console", force=True)
