import json
import logging

import structlog

from orchestrator.logs import configure_logging, mask_card_numbers, redact_card_data


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
        assert "321" not in err
    finally:
        configure_logging("WARNING", "console", force=True)
