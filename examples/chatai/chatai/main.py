"""The ChatAI example backend. Run it under the standard wrapper, which loads chatai-otel's distro:

    cd examples/chatai && opentelemetry-instrument uvicorn chatai.main:app

Everything telemetry does here goes through chatai-otel's public API:
``instrument_app`` (a no-op under the wrapper, which instruments every FastAPI
app; needed when configuring by hand), ``bind_user`` in the auth dependency,
``events.log_event`` / ``track_error`` / ``@track`` / ``genai.ai_call`` in the
handlers, the health router, and ``propagation`` for the jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chatai import ai, jobs, payments
from chatai.auth import check_password, current_user, hash_password, new_session
from chatai.config import config
from chatai.db import Dialog, Document, Handoff, Message, Transaction, User, create_tables, engine
from chatai.db import sessions as db_sessions
from chatai.ratelimit import RateLimiter
from chatai_otel import (
    BusinessEvent,
    ErrorCategory,
    ErrorSeverity,
    EventType,
    HealthChecker,
    context,
    events,
    get_logger,
    health_router,
    instrument_app,
    track_error,
)
from chatai_otel.integrations.browser_tunnel import mount_browser_tunnel
from chatai_otel.integrations.fastapi import request_id

log = get_logger("chatai.api")
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
MARKUP = Decimal(3)  # what a user pays per USD the model costs us

redis_client: Any = None
if config.redis_url:
    import redis.asyncio as aioredis

    redis_client = aioredis.Redis.from_url(config.redis_url)

queue: jobs.JobQueue = (
    jobs.RedisQueue(config.redis_url, config.queue)
    if config.redis_url
    else jobs.MemoryQueue(config.queue)
)
limiter = RateLimiter(config.rate_limit, redis_client, config.rate_limit_prefix)

checker = HealthChecker()
checker.add_database(engine)
if redis_client is not None:
    checker.add_redis(redis_client)
checker.add_system()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await create_tables()
    stop = asyncio.Event()
    in_process_worker = None
    if isinstance(queue, jobs.MemoryQueue):
        # No Redis: the worker runs here, on the same queue object (see chatai.worker otherwise).
        in_process_worker = asyncio.create_task(jobs.run(queue, stop))
        log.info("worker.in_process", queue=queue.name)
    try:
        yield
    finally:
        stop.set()
        if in_process_worker is not None:
            await in_process_worker
        await queue.close()
        if redis_client is not None:
            await redis_client.aclose()
        await engine.dispose()


app = FastAPI(title="ChatAI example", lifespan=lifespan)
instrument_app(app)
app.include_router(health_router(checker))
# The frontend (examples/frontend) runs on its own origin: its fetches carry traceparent
# (so this backend's server spans are children of the browser's), and its OTLP exporters
# post to the tunnel below rather than to the collector.
app.add_middleware(
    CORSMiddleware,
    allow_origins=config.frontend_origins,
    allow_methods=["*"],
    allow_headers=["authorization", "content-type", "traceparent", "tracestate", "x-request-id"],
    expose_headers=["x-request-id"],
    max_age=600,
)
mount_browser_tunnel(app)  # POST /otlp/v1/{traces,logs,metrics}

CurrentUser = Annotated[User, Depends(current_user)]


# --- accounts -----------------------------------------------------------------------------------


class Registration(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", max_length=254)
    password: str = Field(min_length=8, max_length=200)
    role: Literal["user", "operator"] = "user"


class Credentials(BaseModel):
    email: str
    password: str


@app.post("/auth/register", status_code=201)
async def register(body: Registration) -> dict[str, Any]:
    async with db_sessions() as session:
        user = User(
            email=body.email.lower(),
            password_hash=hash_password(body.password),
            role=body.role,
            balance=Decimal(str(config.signup_credit)),
        )
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise HTTPException(409, "email already registered") from None
    await events.log_event(
        BusinessEvent(
            event_type=EventType.USER_REGISTERED,
            user_id=user.id,
            entity_id=user.id,
            entity_type="user",
            data={"role": user.role},
        )
    )
    return {"user_id": user.id, "role": user.role}


@app.post("/auth/login")
async def login(body: Credentials) -> dict[str, Any]:
    async with db_sessions() as session:
        user = await session.scalar(select(User).where(User.email == body.email.lower()))
    if user is None or not check_password(body.password, user.password_hash):
        # The seed's call: a LOW authentication error (counted, logged; the span stays OK).
        await track_error(
            PermissionError("invalid credentials"),
            ErrorCategory.AUTHENTICATION,
            ErrorSeverity.LOW,
            {"email_domain": body.email.rpartition("@")[2][:100]},
        )
        raise HTTPException(401, "invalid email or password")
    token = await new_session(user.id)
    await events.log_event(
        BusinessEvent(event_type=EventType.USER_LOGIN, user_id=user.id, entity_type="user")
    )
    return {"access_token": token, "token_type": "bearer", "user_id": user.id}


@app.get("/me")
async def me(user: CurrentUser) -> dict[str, Any]:
    return {"user_id": user.id, "email": user.email, "role": user.role, "balance": user.balance}


# --- balance ------------------------------------------------------------------------------------


class TopUp(BaseModel):
    amount: Decimal = Field(gt=0, le=1000)
    payment_token: str = Field(min_length=4, max_length=100)


@app.post("/balance/top-up")
async def top_up(body: TopUp, user: CurrentUser) -> Any:
    try:
        charge_id = await payments.charge_card(body.payment_token, body.amount)
    except payments.PaymentDeclinedError as exc:
        track_error(exc, ErrorCategory.BUSINESS_LOGIC, ErrorSeverity.LOW, {"amount": body.amount})
        raise HTTPException(402, "payment declined") from None
    except payments.PaymentProviderError as exc:
        # Money may be in limbo: CRITICAL, which also sends the alert webhook at once.
        # payment_token is scrubbed by its name before it reaches any log, span or record.
        track_error(
            exc,
            ErrorCategory.EXTERNAL_SERVICE,
            ErrorSeverity.CRITICAL,
            {"amount": body.amount, "payment_token": body.payment_token, "provider": "stand-in"},
        )
        # Answered here, not raised: an HTTPException >= 500 would be counted a second time
        # by the web layer as a generic system error.
        return JSONResponse(
            {
                "detail": "payment provider unavailable, you were not charged",
                "request_id": request_id(),
            },
            status_code=502,
        )
    async with db_sessions() as session:
        account = await session.get(User, user.id, with_for_update=True)
        assert account is not None
        account.balance += body.amount
        session.add(
            Transaction(
                user_id=user.id,
                kind="top_up",
                amount=body.amount,
                service_type="card",
                reference=charge_id,
            )
        )
        await session.commit()
        balance = account.balance
    await events.log_event(
        BusinessEvent(
            event_type=EventType.BALANCE_TOPPED_UP,
            user_id=user.id,
            entity_type="balance",
            data={"amount": body.amount, "service_type": "card", "balance": balance},
        )
    )
    return {"balance": balance, "charge_id": charge_id}


@app.get("/balance")
async def balance(user: CurrentUser) -> dict[str, Any]:
    return {"balance": user.balance}


async def charge(user_id: int, amount: Decimal, service_type: str, reference: str) -> Decimal:
    """Take ``amount`` from the user's balance; 402 when it does not cover it."""
    async with db_sessions() as session:
        account = await session.get(User, user_id, with_for_update=True)
        assert account is not None
        if account.balance < amount:
            error = ValueError("insufficient balance")
            track_error(
                error,
                ErrorCategory.BUSINESS_LOGIC,
                ErrorSeverity.LOW,
                {"needed": amount, "service_type": service_type},
            )
            raise HTTPException(402, "insufficient balance, please top up")
        account.balance -= amount
        session.add(
            Transaction(
                user_id=user_id,
                kind="charge",
                amount=amount,
                service_type=service_type,
                reference=reference,
            )
        )
        await session.commit()
        left = account.balance
    events.emit(
        EventType.BALANCE_CHARGED,
        user_id=user_id,
        entity_type="balance",
        data={"amount": amount, "service_type": service_type, "balance": left},
    )
    return left


# --- dialogs and messages -----------------------------------------------------------------------


class NewDialog(BaseModel):
    title: str = Field(default="New dialog", min_length=1, max_length=200)


class NewMessage(BaseModel):
    text: str = Field(min_length=1, max_length=8000)
    model: str = ai.DEFAULT_MODEL


async def own_dialog(dialog_id: int, user: User) -> Dialog:
    async with db_sessions() as session:
        dialog = await session.get(Dialog, dialog_id)
    if dialog is None or (dialog.user_id != user.id and user.role != "operator"):
        raise HTTPException(404, "dialog not found")
    context.bind(dialog_id=dialog_id)  # on every later log line of this request
    return dialog


@app.post("/dialogs", status_code=201)
async def open_dialog(body: NewDialog, user: CurrentUser) -> dict[str, Any]:
    async with db_sessions() as session:
        dialog = Dialog(user_id=user.id, title=body.title)
        session.add(dialog)
        await session.commit()
    await events.log_event(
        BusinessEvent(
            event_type=EventType.DIALOG_CREATED,
            user_id=user.id,
            entity_id=dialog.id,
            entity_type="dialog",
        )
    )
    return {"dialog_id": dialog.id, "title": dialog.title}


@app.get("/dialogs/{dialog_id}")
async def read_dialog(dialog_id: int, user: CurrentUser) -> dict[str, Any]:
    dialog = await own_dialog(dialog_id, user)
    async with db_sessions() as session:
        messages = (
            await session.scalars(
                select(Message).where(Message.dialog_id == dialog_id).order_by(Message.id)
            )
        ).all()
    return {
        "dialog_id": dialog.id,
        "title": dialog.title,
        "status": dialog.status,
        "messages": [{"role": m.role, "text": m.text, "model": m.model} for m in messages],
    }


@app.post("/dialogs/{dialog_id}/messages")
async def send_message(dialog_id: int, body: NewMessage, user: CurrentUser) -> dict[str, Any]:
    dialog = await own_dialog(dialog_id, user)
    if body.model not in ai.MODELS or ai.MODELS[body.model].reply_words == 0:
        raise HTTPException(422, f"unknown model; choose one of {', '.join(ai.CHAT_MODELS)}")
    if dialog.status != "open":
        raise HTTPException(409, "an operator has this dialog")
    if not await limiter.hit(user.id):
        events.emit(
            EventType.RATE_LIMIT_EXCEEDED,
            user_id=user.id,
            entity_id=dialog_id,
            entity_type="dialog",
            data={"limit_per_minute": limiter.limit},
        )
        raise HTTPException(429, "too many messages, slow down", headers={"Retry-After": "60"})
    async with db_sessions() as session:
        history = (
            await session.scalars(
                select(Message.text)
                .where(Message.dialog_id == dialog_id)
                .order_by(Message.id.desc())
                .limit(10)
            )
        ).all()
        session.add(Message(dialog_id=dialog_id, role="user", text=body.text))
        await session.commit()
    await events.log_event(
        BusinessEvent(
            event_type=EventType.MESSAGE_SENT,
            user_id=user.id,
            entity_id=dialog_id,
            entity_type="dialog",
            data={"length": len(body.text), "model": body.model},
        )
    )
    answer = await ai.reply(body.text, list(history), body.model)
    price = (Decimal(str(answer.cost)) * MARKUP).quantize(Decimal("0.000001"))
    balance_left = await charge(user.id, price, "ai_message", f"dialog:{dialog_id}")
    async with db_sessions() as session:
        session.add(
            Message(
                dialog_id=dialog_id,
                role="assistant",
                text=answer.text,
                model=answer.model,
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
            )
        )
        await session.commit()
    log.info("dialog.replied", model=answer.model, output_tokens=answer.output_tokens)
    return {
        "reply": answer.text,
        "model": answer.model,
        "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
        "price": price,
        "balance": balance_left,
    }


# --- handoff to a human operator ----------------------------------------------------------------


class HandoffRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


@app.post("/dialogs/{dialog_id}/handoff", status_code=201)
async def request_handoff(
    dialog_id: int, body: HandoffRequest, user: CurrentUser
) -> dict[str, Any]:
    await own_dialog(dialog_id, user)
    async with db_sessions() as session:
        dialog = await session.get(Dialog, dialog_id)
        assert dialog is not None
        if dialog.status != "open":
            raise HTTPException(409, "a handoff is already under way")
        dialog.status = "handoff"
        handoff = Handoff(dialog_id=dialog_id, reason=body.reason)
        session.add(handoff)
        await session.commit()
    await events.log_event(
        BusinessEvent(
            event_type=EventType.HANDOFF_REQUESTED,
            user_id=user.id,
            entity_id=handoff.id,
            entity_type="handoff",
            data={"dialog_id": dialog_id},
        )
    )
    await jobs.enqueue(queue, "notify_operators", handoff_id=handoff.id)
    return {"handoff_id": handoff.id, "status": handoff.status}


@app.post("/handoffs/{handoff_id}/accept")
async def accept_handoff(handoff_id: int, user: CurrentUser) -> dict[str, Any]:
    if user.role != "operator":
        error = PermissionError("only operators accept handoffs")
        track_error(
            error, ErrorCategory.AUTHORIZATION, ErrorSeverity.MEDIUM, {"handoff_id": handoff_id}
        )
        raise HTTPException(403, "only operators accept handoffs")
    async with db_sessions() as session:
        handoff = await session.get(Handoff, handoff_id)
        if handoff is None:
            raise HTTPException(404, "handoff not found")
        if handoff.status != "requested":
            raise HTTPException(409, "handoff already accepted")
        handoff.status = "accepted"
        handoff.operator_id = user.id
        dialog = await session.get(Dialog, handoff.dialog_id)
        assert dialog is not None
        dialog.status = "operator"
        await session.commit()
    await events.log_event(
        BusinessEvent(
            event_type=EventType.HANDOFF_ACCEPTED,
            user_id=user.id,
            entity_id=handoff_id,
            entity_type="handoff",
            data={"dialog_id": handoff.dialog_id, "notified_operators": handoff.notified},
        )
    )
    return {"handoff_id": handoff_id, "status": "accepted", "dialog_id": handoff.dialog_id}


# --- documents ----------------------------------------------------------------------------------


@app.post("/documents", status_code=202)
async def upload_document(file: UploadFile, user: CurrentUser) -> dict[str, Any]:
    content = await file.read(MAX_DOCUMENT_BYTES + 1)
    if len(content) > MAX_DOCUMENT_BYTES:
        raise HTTPException(413, f"documents are limited to {MAX_DOCUMENT_BYTES} bytes")
    async with db_sessions() as session:
        document = Document(
            user_id=user.id,
            filename=(file.filename or "document")[:255],
            content_type=(file.content_type or "application/octet-stream")[:100],
            size=len(content),
            content=content,
        )
        session.add(document)
        await session.commit()
    await events.log_event(
        BusinessEvent(
            event_type=EventType.DOCUMENT_UPLOADED,
            user_id=user.id,
            entity_id=document.id,
            entity_type="document",
            data={"size": document.size, "content_type": document.content_type},
        )
    )
    job_id = await jobs.enqueue(queue, "process_document", document_id=document.id)
    return {"document_id": document.id, "status": document.status, "job_id": job_id}


@app.get("/documents/{document_id}")
async def read_document(document_id: int, user: CurrentUser) -> dict[str, Any]:
    async with db_sessions() as session:
        document = await session.get(Document, document_id)
    if document is None or document.user_id != user.id:
        raise HTTPException(404, "document not found")
    return {
        "document_id": document.id,
        "filename": document.filename,
        "status": document.status,
        "chunks": document.chunks,
        "tokens": document.tokens,
    }


@app.get("/")
async def index() -> dict[str, Any]:
    return {"service": "chatai example", "docs": "/docs", "health": "/health/detailed"}
