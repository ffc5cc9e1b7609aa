"""Passwords, login tokens and the ``current_user`` dependency (which binds the user to the telemetry)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from chatai.db import LoginSession, User, sessions
from chatai_otel import bind_user

_ITERATIONS = 20_000  # PBKDF2 rounds: a real deployment wants more, the demo wants speed
_bearer = HTTPBearer(auto_error=False)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _ITERATIONS)
    return f"pbkdf2${_ITERATIONS}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _scheme, rounds, salt, digest = stored.split("$")
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    return hmac.compare_digest(candidate.hex(), digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def new_session(user_id: int) -> str:
    """A login token for the user; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    async with sessions() as session:
        session.add(
            LoginSession(id=secrets.token_hex(8), token_hash=token_hash(token), user_id=user_id)
        )
        await session.commit()
    return token


async def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The logged-in user; binds user and session to every later log line and the request's span."""
    if credentials is None:
        raise HTTPException(401, "not logged in", headers={"WWW-Authenticate": "Bearer"})
    async with sessions() as session:
        row = (
            await session.execute(
                select(User, LoginSession.id)
                .join(LoginSession, LoginSession.user_id == User.id)
                .where(LoginSession.token_hash == token_hash(credentials.credentials))
            )
        ).first()
    if row is None:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    user, session_id = row
    bind_user(user.id, session_id=session_id)
    return user
