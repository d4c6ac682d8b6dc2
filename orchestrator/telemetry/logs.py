"""structlog, configured once for every process.

JSON lines when stderr is not a terminal, a readable console otherwise. Every event, ours or a
library's (uvicorn, celery, requests through the stdlib bridge), passes ``redact_card_data``:
any run of 12 or more digits (spaces, dots or dashes allowed between them, glued to anything) is
masked whole to its last four, a CVV in free text and a validation error's ``input_value`` are hidden,
and any field whose key mentions ``cvv`` is dropped, at any depth. ``mask_text`` is the same rule
for text that is stored or returned (Plural's error messages, validation errors).

Identifiers carry long digit runs but are not card numbers: Plural's own
(``v1-250129053005-aa-imFYK2-de-a``), UUIDs (request ids, ours and Plural's:
``17d41f45-5eea-4953-8712-0825c11b36c1``) and our ids ending in 32 hex digits
(``rfd_3879d4602a4549368091b349215366b9``, minted by ``core.ids.new_id`` with no long digit run) stay readable, so a support ticket can quote them,
unless a digit run inside one could hold a card: a Luhn-valid stretch of 13-19 digits, or a run
longer than 19 (a card glued to hex).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_PLURAL_ID = r"v1-\d{6,}-[a-z]{2}-[A-Za-z0-9]+(?:-[a-z]{2}-[A-Za-z0-9]+)?"
# no word boundaries: a card number glued to letters, underscores or URL escapes is still one
_CARD_RUN = r"\d(?:[ .-]?\d){11,}"  # a longer run is masked whole: no tail left in clear
_UUID = r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
# our own ids (chk_…, rfd_…, orch-refund-…) end in 32 hex digits, at least one a letter
_HEX_ID = r"(?<![0-9A-Fa-f])(?=[0-9]*[a-fA-F])[0-9A-Fa-f]{32}(?![0-9A-Fa-f])"
_IDENTIFIERS = re.compile(f"{_PLURAL_ID}|{_UUID}|{_HEX_ID}")
_CARD = re.compile(_CARD_RUN)
_DIGITS = re.compile(r"\d{13,}")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _holds_card(run: str) -> bool:
    """Whether a digit run inside an identifier could hold a card number: longer than any card, or
    with a Luhn-valid stretch of 13-19 digits anywhere in it (a card glued to a digit is still one)."""
    if len(run) > 19:
        return True
    return any(_luhn(run[i : i + n]) for n in range(13, len(run) + 1) for i in range(len(run) - n + 1))


def _identifier(text: str) -> str:
    """An identifier stays readable, except a digit run in it that could be a real card number."""
    return _DIGITS.sub(lambda m: "****" + m.group(0)[-4:] if _holds_card(m.group(0)) else m.group(0), text)
_CVV_TEXT = re.compile(r"(?i)(cvv2?|cvc2?|cvn|card.?verification|security.?code)(\W{0,6})\d{3,4}")
_INPUT_VALUE = re.compile(r"input_value=('[^']*'|\"[^\"]*\"|[^,\]\s]+)")
_SENSITIVE_KEY = re.compile(r"cvv|cvc|card_?number|^pan$", re.IGNORECASE)


def mask_text(text: str) -> str:
    """Mask every run of 12 or more digits (spaces, dots or dashes between digits allowed, whatever stands
    around it) to ``****`` + its last four digits; hide a CVV written in free text and the
    ``input_value`` a validation error quotes. Plural's own identifiers and UUIDs stay readable."""

    text = _INPUT_VALUE.sub("input_value=***", text)
    text = _CVV_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    # identifiers are found first, so a digit run next to one never eats into it
    out: list[str] = []
    end = 0
    for ident in _IDENTIFIERS.finditer(text):
        out.append(_mask_runs(text[end : ident.start()]))
        out.append(_identifier(ident.group(0)))
        end = ident.end()
    out.append(_mask_runs(text[end:]))
    return "".join(out)


def _mask_runs(text: str) -> str:
    return _CARD.sub(lambda m: "****" + re.sub(r"\D", "", m.group(0))[-4:], text)


#: the older name
mask_card_numbers = mask_text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, (bytes, bytearray)):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _scrub_field(k, v) for k, v in value.items() if not _drops(k)}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and 12 <= len(str(abs(value))) <= 19:
        return mask_text(str(value))
    if isinstance(value, BaseException):
        return mask_text(repr(value))
    return value


def _drops(key: Any) -> bool:
    return isinstance(key, str) and "cvv" in key.lower()


def _scrub_field(key: Any, value: Any) -> Any:
    if isinstance(key, str) and _SENSITIVE_KEY.search(key) and value is not None:
        digits = re.sub(r"\D", "", str(value))
        return "****" + digits[-4:] if digits else "****"
    return _scrub(value)


def redact_card_data(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask card numbers and drop CVV fields anywhere in the event."""
    return _scrub(event_dict)


_configured = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged, not the stream it was when
    logging was configured (a replaced or closed stderr must not turn every line into an error)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "auto", *, force: bool = False) -> None:
    """Configure structlog and the stdlib root logger. Safe to call more than once."""
    global _configured
    if _configured and not force:
        return
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_card_data,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Celery's per-task lines ("received", "succeeded", beat's "Sending due task") say every few
    # seconds that an idle sweep ran; our own events say what a task did, and only when it did
    for noisy in ("urllib3", "httpx", "httpcore", "alembic", "celery.app.trace", "celery.worker.strategy",
                  "celery.beat"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
