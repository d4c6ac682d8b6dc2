"""Card details at Plural: the card's network and issuer, and whether its bank takes a native OTP."""

from __future__ import annotations

from orchestrator.domain import methods
from orchestrator.domain.saga import Fact, Step
from orchestrator.plural.models import CardDetailsRequest, CardIdentifier
from orchestrator.saga.calls import call_ahead
from orchestrator.saga.deps import Deps, card_gone, retry_later, state_fact, text
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def card_details(d: Deps, run: Run, c: Checkout) -> None:
    card = d.vault.card(c.id)
    if card is None:
        return card_gone(d, run)
    request = CardDetailsRequest(amount=str(c.amount_value),
                                 card_details=[CardIdentifier(payment_identifier=card.number)])
    got = call_ahead(d, run, Step.CARD_DETAILS, None, lambda: d.plural.get_card_details(request),
                     idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CARD_DETAILS, got.transient)
    if got.refused:
        d.vault.drop_card(c.id)
        exc = got.refused
        state_fact(d, run, Fact.CARD_REFUSED, f"card refused: {exc.code}", error_code=exc.code[:64],
                   error_message=text(exc.message))
        return
    answer = got.result
    info = answer.card_payment_details[0] if answer.card_payment_details else None
    native = methods.uses_native_otp(c.payment_method, bool(info and info.is_native_otp_supported))
    state_fact(d, run, Fact.CARD_CHECKED, "card details known", native_otp=native,
               card_network=(info.card_network if info else None), card_issuer=(info.card_issuer if info else None))
