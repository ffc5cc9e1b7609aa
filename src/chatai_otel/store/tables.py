"""The store's SQL tables, ``business_event_log`` and ``error_log``, on :data:`metadata` so that
a host application's Alembic autogenerate sees them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects import postgresql

# --- tables ------------------------------------------------------------------------------

metadata = MetaData()
"""The store's tables; add it to a host app's Alembic ``target_metadata`` list."""

_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
_EVENT_ID = Uuid(as_uuid=False).with_variant(String(36), "sqlite")
_JSON_DOC = JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIMESTAMP = DateTime(timezone=True)

business_event_log = Table(
    "business_event_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),  # insertion order
    Column("event_id", _EVENT_ID, nullable=False),  # UUIDv7, the idempotency key
    Column("event_type", String(64), nullable=False),
    Column("user_id", String(64)),  # text: int and string ids both fit
    Column("entity_id", String(64)),
    Column("entity_type", String(64)),
    Column("data", _JSON_DOC, nullable=False),
    Column("timestamp", _TIMESTAMP, nullable=False),  # UTC
    Column("request_id", String(64)),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Column("service", String(128), nullable=False),
    UniqueConstraint("event_id", name="uq_business_event_log_event_id"),
    Index("ix_business_event_log_timestamp", "timestamp"),
    Index("ix_business_event_log_event_type_timestamp", "event_type", "timestamp"),
    Index("ix_business_event_log_user_id_timestamp", "user_id", "timestamp"),
)

error_log = Table(
    "error_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("event_id", _EVENT_ID, nullable=False),
    Column("error_type", String(255), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("category", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("context", _JSON_DOC, nullable=False),
    Column("traceback", Text),
    Column("fingerprint", String(64)),
    Column("request_id", String(64)),
    Column("user_id", String(64)),
    Column("timestamp", _TIMESTAMP, nullable=False),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Column("service", String(128), nullable=False),
    UniqueConstraint("event_id", name="uq_error_log_event_id"),
    Index("ix_error_log_timestamp", "timestamp"),
    Index("ix_error_log_category_timestamp", "category", "timestamp"),
    Index("ix_error_log_fingerprint", "fingerprint"),
)

TABLES = {"event": business_event_log, "error": error_log}
