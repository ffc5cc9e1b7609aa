"""Helpers for the collector-bundle tests: Prometheus naming, PromQL metric names, file access.

``prometheus_name`` is THE one documented translation from an OTLP metric to the names
Prometheus stores, as the collector's ``prometheus`` exporter writes them with
``translation_strategy: UnderscoreEscapingWithSuffixes`` (collector/otel-collector.yaml). It
follows the OpenTelemetry-to-Prometheus compatibility rules that the collector implements (Go
package prometheus/otlptranslator):

- every character outside ``[a-zA-Z0-9:]`` splits the name; the parts are joined with ``_``;
- the unit becomes a suffix: ``s`` -> ``seconds``, ``ms`` -> ``milliseconds``, ``By`` -> ``bytes``,
  ``1`` -> nothing, ``%`` -> ``percent``, ``X/Y`` -> ``X_per_Y``; an annotation in braces
  (``{event}``, ``{token}``) is dropped; any other unit is kept as written (``USD`` -> ``USD``);
  the suffix is not added twice;
- a monotonic sum (a counter) gets ``_total``; a gauge with unit ``1`` gets ``_ratio``;
- a histogram is stored as ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``.

Attribute keys become label names the same way (``http.route`` -> ``http_route``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "collector"

_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_INVALID = re.compile(r"[^a-zA-Z0-9:]+")


def _tokens(text: str) -> list[str]:
    return [part for part in _INVALID.split(text) if part]


def _unit_suffixes(unit: str) -> tuple[list[str], list[str]]:
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_tokens = (
        _tokens(_UNITS.get(main, main)) if main and not any(c in main for c in "{}") else []
    )
    per_tokens = (
        ["per", *_tokens(_PER_UNITS.get(per, per))]
        if per and not any(c in per for c in "{}")
        else []
    )
    return main_tokens, per_tokens


def prometheus_name(name: str, unit: str, kind: str, monotonic: bool = False) -> str:
    """The Prometheus metric family name of one OTLP metric (see the module docstring).

    ``kind`` is the OTLP data kind: ``sum``, ``gauge``, ``histogram``, ``exponential_histogram``
    or ``summary``; ``monotonic`` matters for sums only.
    """
    tokens = _tokens(name)
    main_tokens, per_tokens = _unit_suffixes(unit)
    main_suffix = "_".join(main_tokens)
    per_suffix = "_".join(per_tokens)
    if main_suffix and main_suffix not in tokens:
        tokens.append(main_suffix)
    if per_suffix and per_suffix != "per" and per_suffix not in tokens:
        tokens.append(per_suffix)
    if kind == "sum" and monotonic:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if kind == "gauge" and unit == "1":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    result = "_".join(tokens)
    return "_" + result if result[:1].isdigit() else result


def prometheus_series_names(name: str, unit: str, kind: str, monotonic: bool = False) -> set[str]:
    """Every series name a metric produces (a histogram has three)."""
    family = prometheus_name(name, unit, kind, monotonic)
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    if kind == "summary":
        return {family, f"{family}_sum", f"{family}_count"}
    return {family}


def prometheus_label(key: str) -> str:
    """An attribute key as a Prometheus label name (``http.route`` -> ``http_route``)."""
    label = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    if label[:1].isdigit():
        return "key_" + label
    if label.startswith("_") and not label.startswith("__"):
        return "key" + label
    return label


# --- PromQL -------------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    "start",
    "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels left out).

    A small tokenizer, enough for the expressions of this repository: strings, label
    matchers, ranges and grouping clauses are removed; what is left and is not followed by
    ``(`` is a metric name. tests/test_collector_bundle.py checks it on known expressions.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word.lower() in _PROMQL_KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


def promql_label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for _name, body in _MATCHERS.findall(text):
        for matcher in body.split(","):
            label = re.split(r"=~|!~|!=|=", matcher, maxsplit=1)[0].strip()
            if label:
                labels.add(label)
    for _kind, body in _GROUPING.findall(text):
        labels.update(part.strip() for part in body.split(",") if part.strip())
    return labels


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
}


def grafana_to_promql(expr: str) -> str:
    """A Grafana panel query with its variables replaced by values Prometheus accepts."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


# --- files --------------------------------------------------------------------------------------


_ENV_DEFAULT = re.compile(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")


def load_yaml(path: Path) -> Any:
    """The file as compose runs it: every ``${env:NAME:-default}`` read as its default."""
    return yaml.safe_load(_ENV_DEFAULT.sub(lambda match: match.group(1), path.read_text()))


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of collector/prometheus/rules/*.yml."""
    rules = []
    for path in sorted((COLLECTOR / "prometheus" / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, datasource type, query) of every panel target and annotation."""
    queries = []
    for path in sorted((COLLECTOR / "grafana" / "dashboards").glob("*.json")):
        import json

        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                source = (target.get("datasource") or panel.get("datasource") or {})["type"]
                queries.append((path.name, source, target["expr"]))
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                queries.append((path.name, annotation["datasource"]["type"], annotation["expr"]))
    return queries


def documented_promql() -> list[tuple[str, str]]:
    """(where, query) of every query in the ```promql blocks of the README and docs/: the docs
    drift too.

    A query starts at an unindented line; indented lines continue it; ``#`` lines are comments.
    """
    queries: list[tuple[str, str]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        inside = False
        name = path.relative_to(ROOT)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("```"):
                inside = line.strip() == "```promql"
                continue
            if not inside or not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and queries:
                where, query = queries[-1]
                queries[-1] = (where, f"{query}\n{line}")
            else:
                queries.append((f"{name}:{number}", line))
    return queries
