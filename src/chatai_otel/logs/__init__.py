"""The logging pipeline: structlog and stdlib records in one JSON shape, printed once
(:mod:`~chatai_otel.logs.line_writer`) and exported once (:mod:`chatai_otel.export.logs`).

The public calls are :func:`chatai_otel.get_logger` and :func:`chatai_otel.get_audit_logger`;
:mod:`chatai_otel.logs.pipeline` holds them.
"""
