"""The same graph against a real Milvus standalone server (PyPI `milvus`, Milvus 2.3) with authentication.

The test skips with a printed reason when the server cannot start, except under CI (CI=true), where that
is a failure: CI must prove the server path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assets_pkg.domain.store import ProductImageStore
from conftest import BRIEFS, draw_drop, materialize_drop, metadata

SERVER = Path(sys.executable).with_name("milvus-server")
URI = "http://127.0.0.1:19530"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"Milvus server needed in CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    if not SERVER.exists():
        _unavailable(f"{SERVER} not installed (pip install milvus)")
    if _port_open(19530):
        _unavailable("port 19530 is already in use")
    data = tmp_path_factory.mktemp("milvus-server")
    log = open(data / "server.log", "w")
    # stdin stays open: milvus-server waits on it ("Ctrl+C to exit") and quits at end of input.
    proc = subprocess.Popen([str(SERVER), "--data", str(data), "--authorization-enabled", "true"],
                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not _port_open(19530):
            if proc.poll() is not None or time.time() > deadline:
                _unavailable(f"milvus-server did not come up: {(data / 'server.log').read_text()[-500:]}")
            time.sleep(0.5)
        yield URI
    finally:
        # SIGTERM does not always stop it: kill the whole process group for sure.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        log.close()
        deadline = time.time() + 30
        while _port_open(19530) and time.time() < deadline:
            time.sleep(0.5)
        shutil.rmtree(data, ignore_errors=True)


def test_graph_on_a_server_gives_the_same_results_as_lite(studio, milvus_server, monkeypatch):
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    lite = materialize_drop("spring")
    assert lite.success
    lite_refs = json.loads((studio.artifacts / "spring" / "references.json").read_text())

    monkeypatch.setenv("MILVUS_URI", milvus_server)
    monkeypatch.setenv("MILVUS_TOKEN", "root:Milvus")
    monkeypatch.setenv("MILVUS_COLLECTION", "server_test")
    shutil.rmtree(studio.artifacts / "spring")  # start the server side from scratch
    server = materialize_drop("spring")
    assert server.success
    assert metadata(server, "product_image_collection")["indexed"] == 24
    assert metadata(server, "product_image_collection")["milvus"] == milvus_server
    server_refs = json.loads((studio.artifacts / "spring" / "references.json").read_text())
    assert {k: [r["path"] for r in v] for k, v in server_refs.items()} == \
        {k: [r["path"] for r in v] for k, v in lite_refs.items()}
    for brief, refs in server_refs.items():
        for a, b in zip(refs, lite_refs[brief]):
            assert a["score"] == pytest.approx(b["score"], abs=1e-3)

    again = materialize_drop("spring")  # idempotent on the server too
    assert metadata(again, "product_image_collection")["upserted"] == 0
    with ProductImageStore(milvus_server, "root:Milvus", "server_test") as store:
        assert store.count("spring") == 24
        store.client.drop_collection("server_test")


def test_server_errors_are_one_line_and_never_echo_the_token(studio, milvus_server):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    proc = studio.cli("search", "a red circle", check=False,
                      extra_env={"MILVUS_URI": milvus_server, "MILVUS_TOKEN": "root:not-the-password"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"MILVUS_URI={milvus_server}" in proc.stderr and "not-the-password" not in proc.stderr
