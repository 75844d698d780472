"""Imports point one way, as docs/layout.md states: `orchestration`, `cli` and `web` -> assets and resources ->
the stages' logic -> `domain`. Read from the source (every import, those inside functions too), so a test
fails on the line that breaks the direction."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_DAGSTER_MODULES = ("asset", "checks", "resource")  # a stage's Dagster side; the rest of its folder is logic


def kind(module: str) -> tuple[str, str]:
    """(layer, which): app (orchestration, cli, web), dagster (assets, resources, a stage's asset), logic (a
    stage's logic, by stage), domain."""
    parts = module.split(".")
    if parts[0] == "orchestration":
        return "app", "orchestration"
    if parts[1:2] in (["cli"], ["web"]):
        return "app", parts[1]
    if parts[1:2] == ["domain"]:
        return "domain", ""
    if parts[1:2] == ["stages"] and len(parts) > 2:
        return ("dagster" if parts[3:4] and parts[3] in STAGE_DAGSTER_MODULES else "logic"), parts[2]
    return "dagster", parts[1] if len(parts) > 1 else ""


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(line, module) of every import of our own packages in a file."""
    me = module_of(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                targets = [".".join(base + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in ("assets_pkg", "orchestration"):
                yield node.lineno, target


def allowed(me: str, target: str) -> bool:
    (layer, which), (to, to_which) = kind(me), kind(target)
    if to == "app":  # nothing below an app imports one; apps import each other only to start the page
        return layer == "app" and (to_which == which or (which == "cli" and target == "assets_pkg.web.server"))
    if layer == "domain":
        return to == "domain"
    if layer == "logic":  # a stage's logic reads other stages' files through their logic, never their assets
        return to in ("domain", "logic")
    if layer == "app" and which == "orchestration" or me == "assets_pkg.resources":
        return to != "logic"  # triggers and shared resources go through a stage's asset or resource
    return True


def breaks() -> list[str]:
    files = [*ROOT.glob("assets_pkg/**/*.py"), *ROOT.glob("orchestration/*.py")]
    return [f"{path.relative_to(ROOT)}:{line}: {module_of(path)} imports {target}"
            for path in sorted(files) for line, target in imports(path) if not allowed(module_of(path), target)]


def test_imports_point_one_way():
    assert breaks() == []


def test_the_direction_test_sees_each_kind_of_break():
    assert not allowed("assets_pkg.domain.store.rows", "assets_pkg.stages.scan.logic")
    assert not allowed("assets_pkg.stages.references.logic", "assets_pkg.stages.scan.asset")
    assert not allowed("assets_pkg.stages.references.logic", "assets_pkg.resources")
    assert not allowed("assets_pkg.resources", "assets_pkg.stages.campaigns.generator")
    assert not allowed("orchestration.sensors", "assets_pkg.stages.campaigns.logic")
    assert not allowed("assets_pkg.web.review", "assets_pkg.cli.instance")
    assert not allowed("assets_pkg.assets", "orchestration.jobs")
    assert allowed("assets_pkg.stages.references.logic", "assets_pkg.stages.scan.logic")
    assert allowed("assets_pkg.resources", "assets_pkg.stages.campaigns.resource")
    assert allowed("assets_pkg.cli.commands", "assets_pkg.web.server")
    # relative imports resolve as Python resolves them
    found = dict((t, n) for n, t in imports(ROOT / "assets_pkg" / "stages" / "campaigns" / "resource.py"))
    assert "assets_pkg.stages.campaigns.logic" in found and "assets_pkg.domain.errors" in found
