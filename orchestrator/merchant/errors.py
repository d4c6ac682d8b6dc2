"""The merchant API's one error type: a machine-readable code, an HTTP status, a message, and
details that go into the answer's body beside them (``{code, message, **details}``)."""

from __future__ import annotations

from typing import Any


class MerchantError(Exception):
    """A refused merchant or operator request; the API maps it, and only it, to its answer."""

    def __init__(self, http_status: int, code: str, message: str, **details: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.details = http_status, code, message, details

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class CheckoutError(MerchantError):
    """A refused action on a checkout."""


class ResolveRefused(CheckoutError):
    """An operator's resolve that Plural's view of the order contradicts: nothing of the wish was done
    (the checkout may have followed Plural's own fact; ``state`` says where it is)."""

    def __init__(self, message: str, **details: Any):
        super().__init__(409, "RESOLVE_REFUSED", message, **details)
