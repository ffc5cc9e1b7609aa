"""The durable event and error store: the records events and errors hand over
(:mod:`~chatai_otel.store.records`), the local journal that survives a crash
(:mod:`~chatai_otel.store.journal`) and the batching SQL writer
(:mod:`~chatai_otel.store.writer`). Importing this package loads no SQLAlchemy.
"""
