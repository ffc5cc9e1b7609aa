"""The payment provider — a LOCAL STAND-IN with test tokens, the way card processors' sandboxes work.

``tok_visa`` (or any other ``tok_...``) succeeds, ``tok_declined`` is declined,
``tok_provider_down`` fails like an unreachable provider. Replace :func:`charge_card`
with your provider's SDK call; the error handling in ``chatai.main`` stays.
"""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal


class PaymentDeclinedError(Exception):
    """The card was declined: the user's problem, not ours."""


class PaymentProviderError(Exception):
    """The provider did not answer: money may be in limbo, someone must look now."""


async def charge_card(payment_token: str, amount: Decimal) -> str:
    """Charge ``amount`` USD to the card behind ``payment_token``; returns the provider's charge id."""
    await asyncio.sleep(0.03)  # stand-in for the provider's round trip
    if payment_token == "tok_declined":
        raise PaymentDeclinedError("card declined")
    if payment_token == "tok_provider_down":
        raise PaymentProviderError(f"payment provider timed out after 30s charging {amount} USD")
    if not payment_token.startswith("tok_"):
        raise PaymentDeclinedError("unknown payment token")
    digest = hashlib.sha256(f"{payment_token}:{amount}".encode()).hexdigest()
    return f"ch_{digest[:20]}"
