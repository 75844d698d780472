"""The project as Dagster sees it: definitions validate, and the webserver serves the partitioned lineage graph."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")


def test_definitions_validate(studio):
    proc = subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env={**os.environ, **studio.env}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_dg_cli_checks_and_lists_the_same_definitions(studio):
    """`[tool.dg]` in pyproject.toml: Dagster's dg CLI finds the code location without workspace.yaml."""
    dg = Path(sys.executable).with_name("dg")
    env = {**os.environ, **studio.env}
    check = subprocess.run([str(dg), "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run([str(dg), "list", "defs", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assert {a["asset_key"]: a["group_name"] for a in defs["assets"]} == {
        "raw_product_images": "catalog", "product_catalog": "catalog", "clip_embeddings": "catalog",
        "product_image_collection": "catalog",
        "campaign_briefs": "campaigns", "reference_images": "campaigns", "campaign_images": "campaigns",
        "campaign_image_index": "campaigns", "campaign_selects": "campaigns", "search_model": "search",
        "product_duplicates": "catalog"}
    assert sorted(j["name"] for j in defs["jobs"]) == [
        "collect_campaign_images", "drop_graph", "ingest_drop", "publish_selects", "rebuild_for_model",
        "refresh_catalog", "regenerate_campaigns", "search_references", "switch_search_model"]
    assert sorted(s["name"] for s in defs["sensors"]) == [
        "batch_split", "campaign_batches", "campaign_reviews", "drop_folder_sensor", "model_changes",
        "references_follow_inputs"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.load(resp)
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.services
def test_webserver_serves_the_partitioned_lineage_graph(studio):
    port = _free_port()
    proc = subprocess.Popen(
        [str(WEBSERVER), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env={**os.environ, **studio.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert proc.poll() is None, "dagster-webserver exited early"
                assert time.time() < deadline, "dagster-webserver did not come up in 180 s"
                time.sleep(1)
        data = _graphql(
            port,
            "{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned "
            "partitionDefinition { name type } } }",
        )
        nodes = {n["assetKey"]["path"][-1]: n for n in data["assetNodes"]}
        deps = {k: sorted(d["path"][-1] for d in n["dependencyKeys"]) for k, n in nodes.items()}
        assert deps == {
            "raw_product_images": [],
            "product_catalog": ["raw_product_images"],
            "clip_embeddings": ["raw_product_images"],
            "product_image_collection": ["clip_embeddings", "product_catalog"],
            "campaign_briefs": ["product_catalog"],
            "reference_images": ["campaign_briefs", "product_image_collection"],
            "campaign_images": ["campaign_briefs", "reference_images"],
            "campaign_image_index": ["campaign_images"],
            "campaign_selects": ["campaign_images"],
            "search_model": ["campaign_image_index", "product_image_collection"],
            "product_duplicates": ["clip_embeddings"],
        }
        assert not nodes.pop("search_model")["isPartitioned"]  # one model serves every drop
        for n in nodes.values():
            assert n["isPartitioned"]
            assert n["partitionDefinition"]["name"] == "product_drops"
            assert n["partitionDefinition"]["type"] == "DYNAMIC"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _rendered_text(markdown: str) -> tuple[str, list[str]]:
    """What the Dagster UI shows of a description (CommonMark, as it renders them): its text, and the
    markup that would not show as written (HTML tags, emphasis, links, headings)."""
    from markdown_it import MarkdownIt

    shown, markup = [], []
    for block in MarkdownIt("commonmark").parse(markdown):
        if block.type == "html_block":
            markup.append(block.content.strip())
        elif block.type.startswith("heading") or block.type.startswith("bullet_list"):
            markup.append(block.markup)
        for token in block.children or []:
            if token.type in ("text", "code_inline"):
                shown.append(token.content)
            elif token.type in ("softbreak", "hardbreak"):
                shown.append(" ")
            else:
                markup.append(token.content or token.markup or token.type)
    return "".join(shown), markup


def test_every_description_in_the_ui_renders_as_written(studio):
    """Asset, check, job, sensor and schedule descriptions are Markdown in the UI: a `<drop>` outside code is
    eaten as an HTML tag, a `*` turns into emphasis. Each must show exactly its words, code spans as code."""
    import re

    from orchestration.definitions import defs

    described = {f"asset {'/'.join(s.key.path)}": s.description for s in defs.resolve_all_asset_specs()}
    graph = defs.resolve_asset_graph()
    described |= {f"check {key.name}": graph.get_check_spec(key).description for key in graph.asset_check_keys}
    described |= {f"job {j.name}": j.description for j in defs.resolve_all_job_defs()}
    described |= {f"sensor {s.name}": s.description for s in defs.sensors or []}
    described |= {f"schedule {s.name}": s.description for s in defs.schedules or []}
    assert "asset campaign_selects" in described and "sensor drop_folder_sensor" in described
    wrong = {}
    for name, text in described.items():
        if not text:
            continue
        shown, markup = _rendered_text(text)
        written = re.sub(r"`([^`]*)`", r"\1", " ".join(text.split()))
        if markup or " ".join(shown.split()) != written:
            wrong[name] = (text, markup)
    assert wrong == {}
