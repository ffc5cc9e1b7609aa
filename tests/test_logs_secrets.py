"""Property: a secret planted anywhere in a log call never reaches stdout or the OTLP receiver.

Secrets are planted at random depths in structlog fields, in stdlib ``extra`` fields, in
request headers logged as a field, in the message and in exception text; each example is
logged through the real pipeline, flushed to the real receiver, and both outputs are searched.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatai_otel import get_logger

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"
secrets = st.text(alphabet=ALPHABET, min_size=16, max_size=32)
secret_keys = st.sampled_from(
    ["password", "api_key", "apiKey", "token", "client_secret", "authorization", "cookie",
     "session", "private_key", "X-Api-Key", "csrf_token", "card_number", "jwt", "passwd"]
)  # fmt: skip
plain_keys = st.sampled_from(["name", "note", "item", "author", "data", "meta", "headers", "ctx"])


def shapes(secret: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            f"Bearer {secret}",
            f"bearer {secret}",
            f"Basic {secret}",
            f"postgresql://app:{secret}@db:5432/chat",
            f"https://user:{secret}@example.com/path",
            f"password={secret}",
            f"token: {secret}",
            f'{{"api_key": "{secret}"}}',
            f"{{'client_secret': '{secret}'}}",
            f"Authorization: Bearer {secret}",
            f"eyJhbGciOiJIUzI1NiJ9.eyJ{secret}.{secret}",
        ]
    )


def planted(secret: str) -> st.SearchStrategy[object]:
    text_with_secret = st.builds(
        lambda before, shape, after: f"{before} {shape} {after}",
        st.text(alphabet="abc xyz", max_size=10),
        shapes(secret),
        st.text(alphabet="abc xyz", max_size=10),
    )
    leaf = st.one_of(
        st.builds(lambda key: {key: secret}, secret_keys),
        st.builds(lambda key: {key: {"nested": secret}}, secret_keys),
        st.builds(lambda key, text: {key: text}, plain_keys, text_with_secret),
        st.builds(lambda key: {"headers": {key: f"Bearer {secret}", "Accept": "*/*"}}, secret_keys),
        text_with_secret,
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda key, value: {key: value, "n": 1}, plain_keys, inner),
            st.builds(lambda value: ["x", value], inner),
            st.builds(lambda value: ("t", value), inner),
        ),
        max_leaves=4,
    )


@pytest.fixture
def pipe(make_pipeline):
    """One pipeline for all examples of one test run (hypothesis reuses function fixtures)."""
    return make_pipeline()


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), secret=secrets, door=st.sampled_from(["structlog", "stdlib"]))
def test_planted_secrets_never_reach_stdout_or_otlp(pipe, data, secret, door):
    pipe.receiver.clear()
    pipe.out = ""
    value = data.draw(planted(secret), label="field value")
    message = data.draw(st.one_of(st.just("event"), shapes(secret)), label="message")
    in_exception = data.draw(st.booleans(), label="secret in exception text")
    fields = {"payload": value}

    def log() -> None:
        if door == "structlog":
            get_logger("prop").error(message, exc_info=in_exception, **fields)
        else:
            logging.getLogger("prop.std").error(message, exc_info=in_exception, extra=fields)

    if in_exception:
        try:
            raise ConnectionError(f"cannot reach postgresql://app:{secret}@db/chat ({value!r})")
        except ConnectionError:
            log()
    else:
        log()

    printed = "\n".join(pipe.stdout_lines())
    assert printed, "nothing was printed"
    assert secret not in printed
    records = pipe.exported(1, lambda r: r.scope.startswith("prop"))
    exported = repr([(r.body, r.attributes) for r in records])
    assert secret not in exported
