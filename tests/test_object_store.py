"""Drops and artifacts in a bucket: a real S3-compatible server (moto_server, signatures checked) on
loopback; the whole graph, the sensor, exact sync, bad objects, and the errors a bucket brings."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context
from PIL import Image

from assets_pkg.domain.store import ProductImageStore, row_id
from assets_pkg.resources import DropLibrary
from conftest import BRIEFS, check_results, draw_drop, materialize_drop, metadata
from servers import S3Server, started
from test_cli import _one_line_error

pytestmark = pytest.mark.services  # starts real servers: left out of `make test-fast`


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = started(S3Server(tmp_path_factory.mktemp("s3")))
    yield server
    server.stop()


@pytest.fixture
def bucket(studio, s3, monkeypatch) -> str:
    """A fresh bucket; DROPS_DIR and ARTIFACTS_DIR point into it, with the server's credentials."""
    name = f"studio-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    env = {**s3.env(), "DROPS_DIR": f"s3://{name}/drops", "ARTIFACTS_DIR": f"s3://{name}/artifacts"}
    studio.env.update(env)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return name


def upload(s3, bucket: str, folder: Path, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            s3.client().put_object(Bucket=bucket, Key=f"{prefix}/{f.relative_to(folder).as_posix()}", Body=f.read_bytes())


def objects(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def image_gets(s3, bucket: str, drop: str) -> int:
    """Downloads of the drop's image objects (briefs.yaml and products.csv are read by every run, on purpose)."""
    return sum(1 for method, path in s3.requests()
               if method == "GET" and path.startswith(f"/{bucket}/drops/{drop}/") and "?" not in path
               and not path.endswith(("briefs.yaml", "products.csv")))


def decodes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
        return True
    except Exception:
        return False


def expected_ids(s3, bucket: str, drop: str) -> set[str]:
    """Row ids of the drop's objects that are whole images, computed from the bucket itself."""
    return {row_id(drop, hashlib.sha256(v).hexdigest()) for k, v in objects(s3, bucket, f"drops/{drop}/").items()
            if k.endswith(".png") and decodes(v)}


def milvus_ids(studio, drop: str) -> set[str]:
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        return store.ids_of_drop(drop)


def test_whole_graph_with_drops_and_artifacts_in_a_bucket(studio, s3, bucket, tmp_path):
    local = tmp_path / "upload" / "spring"
    draw_drop(local, spec=[("red", "circle", 3), ("blue", "square", 3)], briefs=BRIEFS)
    (local / "empty.png").write_bytes(b"")
    (local / "notes.png").write_bytes(b"not an image at all")
    (local / "cut.png").write_bytes((local / "red_circle_0.png").read_bytes()[:200])
    upload(s3, bucket, local, "drops/spring")
    # Two DataLoader workers, each fetching objects: the reader's worker processes talk to the store too.
    workers = {"CLIP_NUM_WORKERS": "2", "CLIP_BATCH_SIZE": "2"}
    outputs = []

    def run(**kw):
        proc = studio.cli("run", "--json", extra_env=workers, **kw)
        outputs.append(proc.stdout + proc.stderr)
        (summary,) = json.loads(proc.stdout)
        assert summary["ok"], summary["error"]
        return summary

    s = run()
    assert (s["images"], s["encoded"], s["indexed"], s["deleted"]) == (9, 6, 6, 0)
    assert {r["file"]: r["reason"].split(":")[0] for r in s["rejected"]} == {
        "empty.png": "empty file", "notes.png": "not an image", "cut.png": "cannot decode"}
    assert s["generated"] == [f"s3://{bucket}/artifacts/spring/campaign/{b}.png" for b in ("blue-shelf", "red-hero")]
    assert check_names_passed(s)
    stored = objects(s3, bucket, "artifacts/spring/")
    for url in s["generated"]:
        key = url.split(f"s3://{bucket}/", 1)[1]
        assert Image.open(io.BytesIO(stored[key])).size[0] > 0
        assert json.loads(stored[key.replace(".png", ".json")])["drop"] == "spring"
    assert {f"artifacts/spring/{f}" for f in ("manifest.parquet", "embeddings.parquet", "references.json",
                                              "sheets/drop.jpg", "sheets/campaign.jpg")} <= set(stored)
    assert not any("embeddings.partial" in k for k in stored)
    assert not (Path.cwd() / "s3:").exists()
    assert milvus_ids(studio, "spring") == expected_ids(s3, bucket, "spring")

    proc = studio.cli("search", "a red circle", "--drop", "spring", "--top-k", "3", "--json")
    outputs.append(proc.stdout + proc.stderr)
    hits = json.loads(proc.stdout)
    assert [h["path"].rsplit("_", 1)[0] for h in hits] == [f"s3://{bucket}/drops/spring/red_circle"] * 3

    before = image_gets(s3, bucket, "spring")
    s = run()
    assert (s["encoded"], s["reused"], s["indexed"]) == (0, 6, 6)
    assert image_gets(s3, bucket, "spring") == before  # an unchanged drop downloads no image bytes

    extra = tmp_path / "upload" / "more"
    draw_drop(extra, spec=[("green", "triangle", 1), ("yellow", "star", 1)], seed=99)
    client = s3.client()
    client.put_object(Bucket=bucket, Key="drops/spring/green_triangle_0.png",
                      Body=(extra / "green_triangle_0.png").read_bytes())  # added
    client.put_object(Bucket=bucket, Key="drops/spring/red_circle_0.png",
                      Body=(extra / "yellow_star_0.png").read_bytes())  # replaced
    client.delete_object(Bucket=bucket, Key="drops/spring/blue_square_1.png")  # removed
    s = run()
    assert (s["encoded"], s["reused"], s["deleted"], s["indexed"]) == (2, 4, 2, 6)
    assert milvus_ids(studio, "spring") == expected_ids(s3, bucket, "spring")

    proc = studio.cli("drops", "remove", "spring", "--force")
    outputs.append(proc.stdout + proc.stderr)
    assert milvus_ids(studio, "spring") == set()
    assert objects(s3, bucket, "artifacts/spring/") == {}
    assert "drops/spring/briefs.yaml" in objects(s3, bucket, "drops/spring/")  # the drop itself is the user's

    secret = s3.secret
    assert not any(secret in out or s3.key_id in out for out in outputs)
    assert not any(secret.encode() in body for body in objects(s3, bucket, "").values())
    assert not any(secret.encode() in f.read_bytes() for f in (studio.root / "dagster_home").rglob("*") if f.is_file())


def check_names_passed(summary) -> bool:
    return bool(summary["checks"]) and all(summary["checks"].values())


def _tick(instance, cursor):
    from orchestration.sensors import drop_folder_sensor

    result = drop_folder_sensor(build_sensor_context(instance=instance, cursor=cursor,
                                                     resources={"library": DropLibrary()}))
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_sensor_notices_changes_in_a_bucket_from_listings_alone(studio, s3, bucket, tmp_path):
    """The sensor and a run as Dagster launches them, in process, with drops in a bucket."""
    instance = DagsterInstance.get()
    draw_drop(tmp_path / "spring", spec=[("red", "circle", 2), ("blue", "square", 1)])
    upload(s3, bucket, tmp_path / "spring", "drops/spring")
    for drop in ("summer", "autumn"):
        draw_drop(tmp_path / drop, spec=[("green", "star", 1)], seed=5)
        upload(s3, bucket, tmp_path / drop, f"drops/{drop}")
    s3.client().put_object(Bucket=bucket, Key="drops/not a drop/x.png", Body=b"x")

    first = _tick(instance, None)
    (run,) = first.run_requests  # three new drops: one run of the three
    assert (run.tags["drop"], run.tags["drops"], run.tags["trigger"]) == ("autumn..summer", "3", "new drop")
    result = materialize_drop("spring")
    assert result.success and all(check_results(result).values())
    assert metadata(result, "product_image_collection")["indexed"] == 3

    gets = image_gets(s3, bucket, "spring")
    seen = len(s3.requests())
    assert _tick(instance, first.cursor).run_requests == []
    # A tick checks the prefix (one request) and lists every drop's files in one recursive listing (a request
    # per 1,000 objects), however many drops there are.
    paths = [path for _, path in s3.requests()[seen:]]
    assert len(paths) == 2 and all("list-type=2" in path for path in paths), paths
    assert "delimiter=&" in paths[1]
    draw_drop(tmp_path / "new", spec=[("green", "star", 1)], seed=3)
    s3.client().put_object(Bucket=bucket, Key="drops/spring/red_circle_1.png",
                           Body=(tmp_path / "new" / "green_star_0.png").read_bytes())
    changed = _tick(instance, first.cursor)
    assert [(r.partition_key, r.tags["trigger"]) for r in changed.run_requests] == [("spring", "content changed")]
    assert image_gets(s3, bucket, "spring") == gets  # noticed from the listing: nothing downloaded


def test_a_store_export_makes_a_drop_in_a_bucket_and_a_rerun_downloads_nothing(studio, s3, bucket, tmp_path):
    """drops import and every run's refresh with DROPS_DIR in a bucket: the pictures are fetched into the
    drop's own prefix, conditionally the second time, and a changed export in the bucket is a changed drop."""
    from test_storefront import MERCHANT_TSV, Store, _png, _serve

    from assets_pkg.domain import storage
    from assets_pkg.domain.drops import drop_fingerprints

    store = Store()
    try:
        _serve(store)
        feed = tmp_path / "feed.tsv"
        feed.write_text(MERCHANT_TSV.format(u=store.url))
        env = {"FETCH_ALLOW_HOSTS": "127.0.0.1"}
        made = studio.cli("drops", "import", str(feed), "--drop", "summer", extra_env=env, check=False)
        assert made.returncode == 0, made.stderr
        assert "5 pictures: 5 fetched" in made.stdout
        kept = objects(s3, bucket, "drops/summer/")
        pictures = sorted(k for k in kept if k.startswith("drops/summer/pictures/"))
        assert len(pictures) == 5 and all(decodes(kept[k]) for k in pictures)
        assert kept["drops/summer/store-export.tsv"] == feed.read_bytes()
        assert {"drops/summer/products.csv", "drops/summer/.store-pictures.json"} <= set(kept)

        [first] = studio.run_json("--drop", "summer", extra_env=env)
        assert first["ok"] and (first["encoded"], first["indexed"], first["products"]) == (5, 5, 3)
        assert milvus_ids(studio, "summer") == expected_ids(s3, bucket, "summer")

        _, before = drop_fingerprints(storage.location("DROPS_DIR", f"s3://{bucket}/drops"))
        store.log.clear()
        [again] = studio.run_json("--drop", "summer", extra_env=env)
        assert (again["encoded"], store.sent()) == (0, 0) and [s for _, s, _ in store.log] == [304] * 5
        _, after = drop_fingerprints(storage.location("DROPS_DIR", f"s3://{bucket}/drops"))
        assert after == before  # a refresh alone rewrites no object the sensor watches

        store.files["/tile.png"] = _png("blue", (80, 80))  # a new picture behind the same URL
        [changed] = studio.run_json("--drop", "summer", extra_env=env)
        assert (changed["encoded"], changed["indexed"]) == (1, 5) and store.sent() == len(store.files["/tile.png"])
        assert milvus_ids(studio, "summer") == expected_ids(s3, bucket, "summer")

        s3.client().put_object(Bucket=bucket, Key="drops/summer/store-export.tsv",
                               Body=MERCHANT_TSV.format(u=store.url).replace("Pool tile", "Pool tile XL").encode())
        _, edited = drop_fingerprints(storage.location("DROPS_DIR", f"s3://{bucket}/drops"))
        assert edited["summer"] != after["summer"]  # a changed export in the bucket is a changed drop
    finally:
        store.server.shutdown()


def test_bucket_errors_are_one_line_and_never_show_keys(studio, s3, bucket, tmp_path):
    draw_drop(tmp_path / "spring", spec=[("red", "circle", 1)])
    upload(s3, bucket, tmp_path / "spring", "drops/spring")

    proc = studio.cli("drops", "sync", check=False, extra_env={"DROPS_DIR": "s3://no-such-bucket/drops"})
    _one_line_error(proc, "s3://no-such-bucket/drops", "bucket 'no-such-bucket' does not exist")
    proc = studio.cli("run", check=False, extra_env={"ARTIFACTS_DIR": "s3://no-such-bucket/artifacts"})
    _one_line_error(proc, "s3://no-such-bucket/artifacts", "bucket 'no-such-bucket' does not exist")
    proc = studio.cli("drops", "sync", check=False, extra_env={"DROPS_DIR": f"s3://{bucket}/typo"})
    _one_line_error(proc, f"DROPS_DIR=s3://{bucket}/typo: no objects under this prefix")

    wrong = "wrong-secret-" + uuid.uuid4().hex
    for args, url in ((["drops", "sync"], f"s3://{bucket}/drops"), (["run"], f"s3://{bucket}/artifacts")):
        proc = studio.cli(*args, check=False, extra_env={"AWS_SECRET_ACCESS_KEY": wrong})
        _one_line_error(proc, url, "access denied")
        assert wrong not in proc.stderr + proc.stdout and s3.secret not in proc.stderr + proc.stdout
        assert s3.key_id not in proc.stderr + proc.stdout

    stopped = S3Server(tmp_path / "stopped").start()
    stopped.stop()
    proc = studio.cli("drops", "sync", check=False, extra_env={"AWS_ENDPOINT_URL": stopped.endpoint})
    _one_line_error(proc, f"s3://{bucket}/drops", f"cannot reach {stopped.endpoint}")

    proc = studio.cli("drops", "sync", check=False, extra_env={"DROPS_DIR": "ftp://host/drops"})
    _one_line_error(proc, "DROPS_DIR=ftp://host/drops: unsupported URL scheme 'ftp'")


def test_embedding_in_a_bucket_resumes_from_the_batches_a_killed_run_left(studio, s3, bucket, tmp_path, tiny_clip):
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.domain.drops import ProductDrop
    from assets_pkg.stages.embeddings.logic import embed_drop, read_embeddings, write_partial_batch
    from assets_pkg.domain.encoder import ClipEncoder
    from assets_pkg.domain.model_id import clip_model_id
    from assets_pkg.stages.scan.logic import read_manifest, update_manifest

    draw_drop(tmp_path / "spring", spec=[("red", "circle", 2), ("blue", "square", 2)])
    upload(s3, bucket, tmp_path / "spring", "drops/spring")
    drop = ProductDrop.at(studio.env["DROPS_DIR"], "spring")
    art = DropArtifacts.at(studio.env["ARTIFACTS_DIR"], "spring")
    assert update_manifest(drop, art, 10_000_000).changed
    model_id = clip_model_id(str(tiny_clip))
    encoder = ClipEncoder(str(tiny_clip), batch_size=2, num_workers=0)
    first = sorted(read_manifest(art).images["path"])[:2]
    done = encoder.embed_images([drop.folder / p for p in first])
    write_partial_batch(art, list(read_manifest(art).images.set_index("path").loc[first, "sha256"]), done.vectors,
                            model_id)  # what a run killed after its first batch leaves
    assert any("embeddings.partial/" in k for k in objects(s3, bucket, "artifacts/spring/"))

    report = embed_drop(drop, art, model_id, lambda: encoder)
    assert (report.resumed, report.encoded, report.vectors) == (2, 2, 4)
    assert not any("embeddings.partial/" in k for k in objects(s3, bucket, "artifacts/spring/"))
    assert len(read_embeddings(art)[0]) == 4


def test_dagster_dev_ingests_drops_uploaded_to_a_bucket(studio, s3, bucket, tmp_path):
    """As most users run it: `dagster dev` with DROPS_DIR and ARTIFACTS_DIR in the bucket, no CLI; the
    sensor alone turns uploads into partitions and runs."""
    import os

    from servers import RUN_WAIT_S, DagsterDev, wait_for_runs
    from test_daemon import _succeeded

    draw_drop(tmp_path / "spring", spec=[("red", "circle", 2), ("blue", "square", 2)], briefs=BRIEFS)
    upload(s3, bucket, tmp_path / "spring", "drops/spring")
    env = {**os.environ, **studio.env, "DROP_SENSOR_INTERVAL_S": "3", "AUTOMATION_INTERVAL_S": "3"}
    with DagsterDev(env, tmp_path / "dagster-dev.log"):
        instance = DagsterInstance.get()
        run = wait_for_runs(instance, _succeeded("ingest_drop", "spring"), RUN_WAIT_S, "spring's ingest run")
        assert run.tags["trigger"] == "new drop"
        assert milvus_ids(studio, "spring") == expected_ids(s3, bucket, "spring")
        assert len(milvus_ids(studio, "spring")) == 4
        refs = json.loads(objects(s3, bucket, "artifacts/spring/references.json")["artifacts/spring/references.json"])
        assert [r["path"].rsplit("_", 1)[0] for r in refs["red-hero"]] == ["red_circle", "red_circle"]

        before = time.time()
        draw_drop(tmp_path / "summer", spec=[("green", "triangle", 1)], seed=5)
        upload(s3, bucket, tmp_path / "summer", "drops/summer")  # a second drop while the daemon runs
        s3.client().delete_object(Bucket=bucket, Key="drops/spring/blue_square_0.png")  # and a removal
        # (Seen in one tick, both go out in one run; in two ticks, in two.)
        wait_for_runs(instance, _succeeded("ingest_drop", "summer"), RUN_WAIT_S, "summer's ingest run")
        wait_for_runs(instance, _succeeded("ingest_drop", "spring", before), RUN_WAIT_S, "spring's refresh run")
        assert milvus_ids(studio, "spring") == expected_ids(s3, bucket, "spring")
        assert (len(milvus_ids(studio, "spring")), len(milvus_ids(studio, "summer"))) == (3, 1)
        # An automation run that races a finishing search (see test_daemon) may still be going: wait for it.
        runs = wait_for_runs(instance, lambda rs: all(r.is_finished for r in rs) and rs, 120, "every run to end")
        assert all(r.is_success for r in runs)
    log = (tmp_path / "dagster-dev.log").read_text(errors="replace")
    assert s3.secret not in log


def test_whole_graph_with_drops_and_artifacts_in_google_cloud_storage(studio, tmp_path, monkeypatch):
    from servers import GcsServer

    gcs = started(GcsServer(tmp_path / "gcs"), buckets=["studio-gcs"])
    try:
        env = {**gcs.env(), "DROPS_DIR": "gs://studio-gcs/drops", "ARTIFACTS_DIR": "gs://studio-gcs/artifacts"}
        studio.env.update(env)
        draw_drop(tmp_path / "spring", spec=[("red", "circle", 2), ("blue", "square", 2)], briefs=BRIEFS)
        (tmp_path / "spring" / "notes.png").write_bytes(b"not an image")
        from upath import UPath

        for k, v in env.items():
            monkeypatch.setenv(k, v)
        for f in sorted((tmp_path / "spring").iterdir()):
            (UPath("gs://studio-gcs/drops/spring") / f.name).write_bytes(f.read_bytes())

        (s,) = studio.run_json()
        assert s["ok"], s["error"]
        assert (s["images"], s["encoded"], s["indexed"]) == (5, 4, 4)
        assert [r["file"] for r in s["rejected"]] == ["notes.png"]
        assert s["generated"] == [f"gs://studio-gcs/artifacts/spring/campaign/{b}.png" for b in ("blue-shelf", "red-hero")]
        hits = json.loads(studio.cli("search", "a red circle", "--drop", "spring", "--top-k", "2", "--json").stdout)
        assert [h["path"].rsplit("_", 1)[0] for h in hits] == ["gs://studio-gcs/drops/spring/red_circle"] * 2

        def image_downloads() -> int:  # briefs.yaml, products.csv, channels.yaml: read by every run, on purpose
            return gcs.downloads("studio-gcs", "drops/spring/") - sum(
                gcs.downloads("studio-gcs", f"drops/spring/{f}")
                for f in ("briefs.yaml", "products.csv", "channels.yaml"))

        before = image_downloads()
        assert before >= 2 * 5 - 1  # the first run read every object (the scan and the encoder)
        (s,) = studio.run_json()
        assert (s["encoded"], s["reused"], s["indexed"]) == (0, 4, 4)
        assert image_downloads() == before  # an unchanged drop downloads no image

        proc = studio.cli("drops", "sync", check=False, extra_env={"DROPS_DIR": "gs://no-such-bucket/drops"})
        _one_line_error(proc, "gs://no-such-bucket/drops", "bucket 'no-such-bucket' does not exist")
    finally:
        gcs.stop()
