"""What the application reports on purpose: business events, tracked errors and their
alerts, ``@track`` timings and GenAI calls, each onto a span, a counter and the log."""
