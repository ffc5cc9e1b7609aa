"""The scrubber: secret keys at any depth, secret-shaped values anywhere, safe keys kept."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatai_otel.redaction import REDACTED, Scrubber, scrub, scrub_headers, scrub_text

SECRET_KEYS = [
    "password",
    "Password",
    "db_password",
    "dbPassword",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refreshToken",
    "api_key",
    "apiKey",
    "APIKey",
    "X-Api-Key",
    "x-apikey",
    "authorization",
    "Authorization",
    "auth",
    "auth_header",
    "cookie",
    "Cookie",
    "set-cookie",
    "Set-Cookie",
    "session",
    "sessionid",
    "session_token",
    "credential",
    "credentials",
    "private_key",
    "privateKey",
    "jwt",
    "csrf",
    "csrf_token",
    "X-XSRF-TOKEN",
    "card_number",
    "cardNumber",
    "ssn",
]
SAFE_KEYS = [
    "author",
    "authors",
    "authenticated",
    "authority",
    "session_id",
    "sessionId",
    "user_id",
    "request_id",
    "input_tokens",
    "gen_ai.usage.output_tokens",
    "max_tokens",
    "token_count",
    "token_type",
    "keyboard",
    "message",
    "dialog_id",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_recognised(key):
    assert Scrubber().is_secret_key(key)


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_safe_keys_are_not(key):
    assert not Scrubber().is_secret_key(key)


def test_keys_can_be_added_and_marked_safe():
    scrubber = Scrubber(extra_keys=["pin", "otp_code"], safe_keys=["auth_method"])
    assert scrubber.is_secret_key("pin")
    assert scrubber.is_secret_key("user_pin")
    assert scrubber.is_secret_key("otpCode")
    assert not scrubber.is_secret_key("auth_method")
    assert scrubber.is_secret_key("auth")


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("connect postgresql://app:s3cr3t-pw@db:5432/chat failed", "s3cr3t-pw", "app:"),
        ("redis://:hunter22@cache:6379/0", "hunter22", "redis://"),
        ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz", "Authorization"),
        ("got bearer 0123456789abcdef from header", "0123456789abcdef", "from header"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "Basic"),
        (
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U here",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
            "here",
        ),
        ("password=hunter2&user=bob", "hunter2", "user=bob"),
        ("query: api_key=k-123 ok", "k-123", "ok"),
        ('{"password": "p w d", "user": "bob"}', "p w d", '"user": "bob"'),
        ("{'client_secret': 'xyz789'}", "xyz789", "client_secret"),
        ("Cookie: theme=dark; session=abc123", "abc123", "Cookie: "),
        ("prefs: theme=dark; session=abc123", "abc123", "theme=dark"),
        (
            "POST https://api.telegram.org/bot123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-bs/sendMessage",
            "AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-bs",
            "/sendMessage",
        ),
        ("key sk-proj-abcdefghijklmnop0123 leaked", "sk-proj-abcdefghijklmnop0123", "leaked"),
        (
            "clone https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/x",
            "ghp_",
            "github.com",
        ),
        ("AWS AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "used"),
    ],
)
def test_secret_shapes_in_text_are_redacted(text, secret, kept):
    result = Scrubber().scrub_text(text)
    assert secret not in result
    assert REDACTED in result
    assert kept in result


@pytest.mark.parametrize(
    "text",
    [
        "work.done",
        "user 42 logged in",
        "author=Bob wrote 3 messages",
        "token expired, please log in again",
        "Started server process [123]",
        "http://example.com/path?q=1",
        "input_tokens=512 output_tokens=128",
        "session_id=7f9c",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert Scrubber().scrub_text(text) == text


def test_nested_structures_are_scrubbed_at_any_depth():
    data = {
        "user": {"name": "bob", "auth": {"token": "t0k3n"}},
        "items": [{"password": "pw1"}, ("ok", {"api_key": "k1"})],
        "author": "Alice",
        "url": "https://u:pw2@host/x",
        "count": 3,
        "session_id": "chat-1",
    }
    result = scrub(data)
    text = repr(result)
    for secret in ("t0k3n", "pw1", "k1", "pw2"):
        assert secret not in text
    assert result["author"] == "Alice"
    assert result["count"] == 3
    assert result["session_id"] == "chat-1"
    assert result["user"]["auth"] == REDACTED


def test_dataclasses_and_pydantic_models_are_scrubbed_inside():
    @dataclasses.dataclass
    class Login:
        user: str
        password: str

    class Payment(pydantic.BaseModel):
        amount: int
        card_number: str

    result = scrub(
        {"login": Login("bob", "pw-dc"), "payment": Payment(amount=5, card_number="4111")}
    )
    assert result == {
        "login": {"user": "bob", "password": REDACTED},
        "payment": {"amount": 5, "card_number": REDACTED},
    }


def test_headers_mapping_pairs_and_raw_asgi_bytes():
    headers = [
        (b"authorization", b"Bearer abcdefgh123"),
        (b"cookie", b"sid=1"),
        (b"x-api-key", b"k"),
        (b"user-agent", b"curl/8"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"referer", b"https://u:pw@site/"),
    ]
    result = scrub_headers(headers)
    assert result["authorization"] == REDACTED
    assert result["cookie"] == REDACTED
    assert result["x-api-key"] == REDACTED
    assert result["user-agent"] == "curl/8"
    assert result["set-cookie"] == f"{REDACTED}, {REDACTED}"
    assert "pw" not in result["referer"]
    assert scrub_headers({"Authorization": "x", "Accept": "*/*"}) == {
        "Authorization": REDACTED,
        "Accept": "*/*",
    }


def test_scrub_text_module_function_uses_the_process_scrubber():
    assert "hunter2" not in scrub_text("password: hunter2")


# --- property: a planted secret never survives, wherever it is --------------------------

secret_values = st.text(
    alphabet="ABCDEFGHJKMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789", min_size=12, max_size=24
)
keys = st.sampled_from(
    ["password", "api_key", "token", "Authorization", "client_secret", "session"]
)
plain_keys = st.sampled_from(["name", "note", "item", "author", "data", "meta"])


def plant(secret: str) -> st.SearchStrategy[object]:
    """A structure with ``secret`` somewhere: under a secret key, or in a secret shape."""
    shaped = st.sampled_from(
        [
            f"Bearer {secret}",
            f"postgresql://app:{secret}@db/x",
            f"password={secret}",
            f'{{"api_key": "{secret}"}}',
            f"Authorization: Basic {secret}",
        ]
    )
    leaf = st.one_of(
        st.builds(lambda k: {k: secret}, keys),
        st.builds(lambda k, s: {k: s}, plain_keys, shaped),
        shaped.map(lambda s: f"some text {s} more text"),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda k, v: {k: v, "other": 1}, plain_keys, inner),
            st.builds(lambda v: [1, "x", v], inner),
        ),
        max_leaves=5,
    )


@settings(max_examples=300, deadline=None)
@given(st.data(), secret_values)
def test_planted_secrets_never_survive_scrub(data, secret):
    value = data.draw(plant(secret))
    assert secret not in repr(Scrubber().scrub(value))


def _scanned(scrubber: Scrubber, text: str) -> str:
    """scrub_text the long way: the trigger and the shape scan, no shortcut."""
    from chatai_otel.redaction import _SHAPES, _TRIGGER

    if not _TRIGGER.search(text):
        return text
    return _SHAPES.sub(scrubber._replace_shape, scrubber._scrub_pairs(text))


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                *("AKIA", "IOSFODNN7EXAMPLE", "Bearer", "token", "eyJ", "sk", "ghp", "xoxb"),
                *("0", "ab", "-", "sk-", "xoxb-", "0123456789abcdef0123", "ghp_"),
            ]
        )
        | st.text(alphabet="abcdefABCDEF0123456789AKIOSxyzé-", min_size=1, max_size=12),
        min_size=1,
        max_size=6,
    )
)
def test_the_ids_shortcut_gives_what_the_scan_gives(parts):
    scrubber = Scrubber()
    text = "".join(parts)
    assert scrubber.scrub_text(text) == _scanned(scrubber, text)


def test_ids_are_passed_through_without_filling_the_text_caches():
    from chatai_otel.logs.values import ValueCleaner

    scrubber = Scrubber()
    cleaner = ValueCleaner(scrubber, 8192)
    request_id = "6c448a8809fb6d73945825657e3a8a1c"
    assert scrubber.scrub_text_cached(request_id) == request_id
    assert cleaner.fields({"request_id": request_id}) == {"request_id": request_id}
    event_id = "01a253cc-aadc-718f-8319-608b679cb759"  # a UUID: hex digits and dashes
    assert scrubber.scrub_text_cached(event_id) == event_id
    assert cleaner.fields({"event_id": event_id}) == {"event_id": event_id}
    assert scrubber.text_cache == {} and cleaner._text_cache == {}
    # a key with a dash is still found: its prefix has letters past "f"
    assert scrubber.scrub_text("sk-0123456789abcdef0123") == REDACTED
    # an AWS access key id is letters and digits too: still found
    assert scrubber.scrub_text("AKIAIOSFODNN7EXAMPLE") == REDACTED
    assert cleaner.fields({"note": "AKIAIOSFODNN7EXAMPLE"}) == {"note": REDACTED}
