"""Tables and the database engine: SQLAlchemy 2.0 asyncio, SQLite by default, PostgreSQL via DATABASE_URL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from chatai.config import config
from chatai_otel import track


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(schema=config.database_schema)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="user")  # user | operator
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class LoginSession(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public: on logs as session_id
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # the token itself is not kept
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Dialog(Base):
    __tablename__ = "dialogs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24), default="open")  # open | handoff | operator
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(ForeignKey("dialogs.id"))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant | operator
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(64), default=None)
    input_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    output_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Handoff(Base):
    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(ForeignKey("dialogs.id"))
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="requested")  # requested | accepted
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    notified: Mapped[int] = mapped_column(Integer, default=0)  # operators the worker notified
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Transaction(Base):
    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))  # top_up | charge
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    service_type: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | processed | failed
    chunks: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


def _engine() -> AsyncEngine:
    url = config.database_url
    if url.startswith("sqlite"):
        # The backend and the worker are two processes on one file: wait for the lock, and
        # let readers and the writer work at once (WAL).
        created = create_async_engine(url, connect_args={"timeout": 15})

        @event.listens_for(created.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.close()

        return created
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


engine = _engine()
sessions = async_sessionmaker(engine, expire_on_commit=False)


@track("create_tables")  # one trace at start-up, instead of one per PRAGMA/CREATE statement
async def create_tables() -> None:
    """Create the schema (PostgreSQL) and the tables when missing."""
    async with engine.begin() as conn:
        if config.database_schema and engine.dialect.name == "postgresql":
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{config.database_schema}"'))
        await conn.run_sync(Base.metadata.create_all)
