"""The ``chatai-otel`` command line (:mod:`~chatai_otel.cli.main`): ``demo``, ``doctor``,
``view``, ``store``. Nothing here runs inside an application."""
