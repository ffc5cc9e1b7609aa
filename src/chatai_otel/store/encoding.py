"""A record's way to a row: the journal's JSON document (``encode``), then the column values
(bounded text, NUL bytes stripped, JSON documents as the dialect stores them)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Table,
)

from chatai_otel.store.records import EventRecord, Record
from chatai_otel.store.tables import TABLES

# --- encoding: record -> journal payload -> row ------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def encode(record: Record) -> bytes:
    """The journal payload of a record: one JSON object (timestamps in RFC 3339, UTC)."""
    if isinstance(record, EventRecord):
        doc: dict[str, Any] = {
            "kind": "event",
            "event_id": record.event_id,
            "event_type": record.event_type,
            "timestamp": _utc(record.timestamp),
            "service": record.service_name,
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "request_id": record.request_id,
            "user_id": record.user_id,
            "entity_id": record.entity_id,
            "entity_type": record.entity_type,
            "data": record.data,
        }
    else:
        doc = {
            "kind": "error",
            "event_id": record.event_id,
            "timestamp": _utc(record.timestamp),
            "service": record.service_name,
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "request_id": record.request_id,
            "user_id": record.user_id,
            "error_type": record.error_type,
            "error_message": record.message,
            "category": record.category,
            "severity": record.severity,
            "context": record.context,
            "traceback": record.stacktrace,
            "fingerprint": record.fingerprint,
        }
    try:
        return orjson.dumps(doc, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson refuses integers beyond 64 bits before it asks the default
        return orjson.dumps(_plain(doc), default=_json_default, option=orjson.OPT_NON_STR_KEYS)


def _plain(value: Any) -> Any:
    """``value`` with every integer JSON cannot carry exactly turned into its digits."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def _text(value: Any, limit: int | None = None) -> str | None:
    """A column value as text: no NUL (PostgreSQL refuses it), clipped to the column's length."""
    if value is None:
        return None
    result = value if isinstance(value, str) else str(value)
    if "\x00" in result:
        result = result.replace("\x00", "")
    return result[:limit] if limit is not None else result


def strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    return value


def _doc(value: Any) -> Any:
    """A JSON column value (jsonb refuses \\u0000 too)."""
    if value is None:
        return {}
    return strip_nul(value)


def _lengths(table: Table) -> dict[str, int | None]:
    return {c.name: getattr(c.type, "length", None) for c in table.columns if c.name != "id"}


_LIMITS = {kind: _lengths(table) for kind, table in TABLES.items()}
DOC_COLUMNS = {"data", "context"}


def python_row(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Column values as SQLAlchemy binds them (datetime, dict)."""
    row: dict[str, Any] = {}
    for name, limit in _LIMITS[kind].items():
        value = doc.get(name)
        if name in DOC_COLUMNS:
            row[name] = _doc(value)
        elif name == "timestamp":
            row[name] = _utc(datetime.fromisoformat(str(value)))
        else:
            row[name] = _text(value, limit)
    return row
