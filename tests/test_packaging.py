"""The declared dependencies say what the package's code imports: every third-party module that
``src/chatai_otel`` imports comes from a distribution it declares (core or an extra), every
core dependency is imported somewhere, and 0.x dependencies have an upper bound."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "chatai_otel"
# Declared, never imported by name: the HTTP exporter is chosen by configuration; the stock
# FastAPI/ASGI instrumentors are the design's named packages, whose entry points the distro
# skips in favour of chatai_otel.integrations.asgi (distro.REPLACED_INSTRUMENTORS).
PLUGINS = {
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-instrumentation-asgi",
}
NOT_DEPENDENCIES = {"chatai"}  # the example app, which ``chatai-otel demo`` runs from its folder


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    """(core dependency names, names in any extra but dev)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {
        _name(r)
        for extra, requirements in project["optional-dependencies"].items()
        if extra != "dev"
        for r in requirements
    }
    return core, extras - {"chatai-otel"}


@cache
def module_owners() -> dict[str, str]:
    """Importable module name -> the installed distribution whose files hold it."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        for file in dist.files or ():
            parts = file.parts
            if not parts or not parts[-1].endswith((".py", ".so", ".pyd")):
                continue
            stem = parts[-1].split(".")[0]
            module = ".".join([*parts[:-1], stem]) if stem != "__init__" else ".".join(parts[:-1])
            if module:
                owners.setdefault(module, name)
    return owners


def imported_modules() -> set[str]:
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from opentelemetry import trace`: the namespace's module is what is imported
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    skip = sys.stdlib_module_names | {"chatai_otel"} | NOT_DEPENDENCIES
    return {m for m in found if m.split(".")[0] not in skip}


def owner_of(module: str) -> str | None:
    owners = module_owners()
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        owner = owners.get(".".join(parts[:end]))
        if owner is not None:
            return owner
    return None


def test_every_third_party_import_is_declared() -> None:
    core, extras = declared()
    undeclared = {
        module: owner
        for module in imported_modules()
        if (owner := owner_of(module)) is not None and owner not in core | extras
    }
    assert undeclared == {}
    assert all(owner_of(module) for module in imported_modules()), [
        m for m in imported_modules() if owner_of(m) is None
    ]


def test_every_core_dependency_is_imported() -> None:
    core, _extras = declared()
    used = {owner_of(module) for module in imported_modules()}
    assert core - used - PLUGINS == set()


def test_zero_x_dependencies_have_an_upper_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, more in project["optional-dependencies"].items():
        if extra != "dev":
            requirements += more
    unbounded = [
        r for r in requirements if re.search(r">=\s*0\.", r) and not re.search(r"<\s*\d", r)
    ]
    assert unbounded == []


def test_the_lowest_constraints_are_the_lower_bounds_of_the_opentelemetry_pins() -> None:
    """``./dev test --lowest`` must install exactly the releases pyproject.toml promises."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for more in project["optional-dependencies"].values():
        requirements += more
    floors = {
        _name(r): re.search(r">=\s*([\w.]+)", r).group(1)  # type: ignore[union-attr]
        for r in requirements
        if _name(r).startswith("opentelemetry-")
    }
    lines = (ROOT / "constraints" / "opentelemetry-lowest.txt").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    for name, floor in floors.items():
        lowest = Version(pinned[name])
        assert lowest >= Version(floor) and lowest.release[:2] == Version(floor).release[:2], (
            name,
            floor,
            lowest,
        )
    # every OpenTelemetry distribution installed is pinned (transitive ones too)
    installed = {
        dist.metadata["Name"].lower().replace("_", "-") for dist in metadata.distributions()
    }
    otel = {name for name in installed if name.startswith("opentelemetry-")}
    # (newer releases split two packages out of the exporters; 1.40 has neither)
    newer_only = {"opentelemetry-exporter-http-transport", "opentelemetry-exporter-otlp-common"}
    assert otel - set(pinned) - newer_only == set()


def test_every_metric_name_comes_from_metric_names() -> None:
    """No instrument is created with a name written in place: metric_names holds them all."""
    creators = {
        "create_counter",
        "create_up_down_counter",
        "create_histogram",
        "create_gauge",
        "create_observable_gauge",
        "create_observable_counter",
        "create_observable_up_down_counter",
        "request_histogram",
    }
    literal = []
    for path in SOURCE.rglob("*.py"):
        if path.name == "metric_names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in creators and isinstance(node.args[0], ast.Constant | ast.JoinedStr):
                literal.append(f"{path.name}:{node.lineno}")
    assert literal == []


@pytest.mark.e2e
def test_import_chatai_otel_is_cheap_and_get_logger_loads_only_the_logging_pipeline() -> None:
    """In a fresh interpreter: nothing of ours but the package at ``import chatai_otel``;
    ``get_logger`` without the web layer, FastAPI, the health checker or the store; every
    public name still there."""
    script = (
        "import json, sys\n"
        "import chatai_otel\n"
        "first = sorted(m for m in sys.modules if m.startswith('chatai_otel'))\n"
        "from chatai_otel import get_logger\n"
        "get_logger('x')\n"
        "second = sorted(m for m in sys.modules if m.startswith(('chatai_otel', 'fastapi')))\n"
        "names = {name: callable(getattr(chatai_otel, name)) or name for name in chatai_otel.__all__}\n"
        "print(json.dumps([first, second, sorted(names), sorted(dir(chatai_otel))]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, second, names, listed = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == ["chatai_otel"]
    for heavy in (
        "fastapi",
        "chatai_otel.integrations.fastapi",
        "chatai_otel.health.checker",
        "chatai_otel.store.writer",
    ):
        assert heavy not in second, second
    assert "chatai_otel.logs.pipeline" in second
    import chatai_otel

    assert names == sorted(chatai_otel.__all__) and set(chatai_otel.__all__) <= set(listed)


# docs/architecture.md, bottom to top: a module imports from its own layer or lower ones.
LAYERS = [
    {"config", "context", "redaction", "spans", "metric_names", "process_hooks"},
    {"_sdk_compat"},
    {"export"},
    {"logs"},
    {"providers"},
    {"store"},
    {"bootstrap"},
    {"process_settings"},
    {"tracking"},
    {"health"},
    {"integrations"},
    {"distro", "setup"},
    {"testing"},
    {"cli"},
]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_imports_flow_downward_through_the_layers() -> None:
    rank = {name: level for level, names in enumerate(LAYERS) for name in names}
    upward: list[str] = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).with_suffix("")
        module = ".".join(("chatai_otel", *relative.parts)).removesuffix(".__init__")
        if module == "chatai_otel":
            continue  # the public face imports lazily from every layer
        mine = rank[_unit(module)]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chatai_otel"):
                if node.module == "chatai_otel":
                    targets = [f"chatai_otel.{alias.name}" for alias in node.names]
                else:
                    targets = [node.module or ""]
            for target in targets:
                theirs = rank.get(_unit(target))
                if theirs is not None and theirs > mine:
                    upward.append(f"{module}:{node.lineno} imports {target}")
    assert upward == []
