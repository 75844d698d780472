"""Shared fixtures: a real tiny CLIP checkpoint, generated drops, an isolated studio environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "data" / "models"

# Each drop is generated from (colour, shape, count) so tests know exactly what is in it.
SHAPES_DROP = [(c, s, 2) for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle")]


def draw_drop(folder: Path, spec=SHAPES_DROP, seed: int = 7, briefs: str | None = None) -> list[str]:
    """Write pictures named <colour>_<shape>_<k>.png; returns their names."""
    from assets_pkg.domain.checkpoints import draw_shape

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for colour, shape, count in spec:
        for k in range(count):
            name = f"{colour}_{shape}_{k}.png"
            draw_shape(colour, shape, rng).save(folder / name)
            names.append(name)
    if briefs is not None:
        (folder / "briefs.yaml").write_text(briefs)
    return names


BRIEFS = """briefs:
  - id: red-hero
    prompt: A red product on a sunny beach
    query: a red circle
    top_k: 2
  - id: blue-shelf
    prompt: Blue products on a shelf
    query: a blue square
    aspect_ratio: "16:9"
"""


def _checkpoint(name: str, arch: str) -> Path:
    """A checkpoint under data/models, written by the repo's own script the first time."""
    from filelock import FileLock

    path = MODELS / name
    MODELS.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # test workers (pytest -n) start at once: one writes, the others wait
        if not path.exists():
            from assets_pkg.domain.checkpoints import write_checkpoint

            write_checkpoint(path, arch, log=None)
    return path


@pytest.fixture(scope="session", autouse=True)
def _publish_outside_the_repo(tmp_path_factory):
    """Every run a test makes publishes under its temporary folder (unless the test names PUBLISH_DIR),
    never into the repo's data/publish."""
    if "PUBLISH_DIR" not in os.environ:
        os.environ["PUBLISH_DIR"] = str(tmp_path_factory.mktemp("publish"))
    yield


@pytest.fixture(scope="session")
def tiny_clip() -> Path:
    """The repo's tiny CLIP checkpoint, trained once (about a minute) and reused."""
    return _checkpoint("tiny-clip.pt", "tiny")


@pytest.fixture(scope="session")
def vit_b32_shaped() -> Path:
    """Randomly initialised weights with the exact ViT-B/32 shapes (about 300 MB)."""
    return _checkpoint("vit-b-32-shaped.pt", "vit-b-32")


_FORKED: list = []


_SERVER: list = []


def forked_cli():
    """This worker's connection to the session's forking process for CLI commands (tests/forked_cli.py), or,
    without test workers, its own one, started on first use."""
    from forked_cli import SHARED, ForkedCli

    if not _FORKED:
        _FORKED.append(ForkedCli(ROOT, os.environ.get(SHARED)))
    return _FORKED[0]


def pytest_configure(config):
    # A shell that started pytest in the background may have left SIGTERM ignored, and every process the tests
    # start would inherit that: pools, servers and `dagster dev` would then outlive their stop signal.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # xdist's controller: one forking process for all its workers, importing while they collect (one
        # process's imports and learned imports instead of one per worker).
        from forked_cli import SHARED, start_server

        proc, path = start_server(ROOT)
        _SERVER.append(proc)
        os.environ[SHARED] = path


def pytest_unconfigure(config):
    from forked_cli import stop_server

    for proc in _SERVER:
        stop_server(proc)


def pytest_sessionfinish(session, exitstatus):
    for forked in _FORKED:
        forked.close()


@dataclass
class Studio:
    root: Path
    env: dict

    @property
    def drops(self) -> Path:
        return Path(self.env["DROPS_DIR"])

    @property
    def artifacts(self) -> Path:
        return Path(self.env["ARTIFACTS_DIR"])

    def cli(self, *args: str, check: bool = True, extra_env: dict | None = None,
            python_args: list[str] = ()) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, **(extra_env or {})}
        if python_args:  # the interpreter's own options need a process of its own
            proc = subprocess.run([sys.executable, *python_args, "-m", "assets_pkg.cli", *args],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        else:
            proc = forked_cli().run(list(args), env, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"drop-studio {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def run_json(self, *args: str, **kw) -> list[dict]:
        proc = self.cli("run", "--json", *args, **kw)
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def _dagster_home_template(tmp_path_factory) -> Path:
    """A Dagster home with the shipped dagster.yaml whose SQLite storage has been created, once per test worker:
    creating the schema (SQLAlchemy's tables and alembic's stamp, for runs, schedules and the event log index)
    costs about 0.35 s of CPU against 0.07 s to open an existing one, which every test would otherwise pay in
    its first command."""
    from dagster import DagsterInstance

    home = tmp_path_factory.mktemp("dagster-home-template")
    (home / "dagster.yaml").write_text((ROOT / "orchestration" / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()
    return home


@pytest.fixture
def studio(tmp_path, tiny_clip, _dagster_home_template, monkeypatch):
    """An isolated environment: drops, artifacts, Milvus Lite file and Dagster home (a copy of an empty
    instance with the shipped config) under tmp_path."""
    env = {
        "DROPS_DIR": str(tmp_path / "drops"),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "DROP_STUDIO_MILVUS_URI": str(tmp_path / "milvus.db"),
        "MILVUS_COLLECTION": "product_images",
        "CLIP_MODEL": str(tiny_clip),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PUBLISH_DIR": str(tmp_path / "publish"),
    }
    (tmp_path / "drops").mkdir()
    shutil.copytree(_dagster_home_template, tmp_path / "dagster_home")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("MILVUS_TOKEN", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(k, raising=False)
    yield Studio(tmp_path, env)
    _IN_MEMORY.clear()


_IN_MEMORY: list = []


def in_memory_instance():
    """This test's in-memory Dagster instance (see materialize_drop)."""
    from dagster import DagsterInstance

    if not _IN_MEMORY:
        _IN_MEMORY.append(DagsterInstance.ephemeral())
    return _IN_MEMORY[0]


def materialize_drop(drop: str, instance=None, run_config=None, **resource_overrides):
    """Run the whole graph for one drop in-process with the environment's settings.

    Without `instance`, the runs of one test go to one in-memory Dagster instance (Dagster's own, as its testing
    guide uses): the stages keep their state on disk and in Milvus, not in the instance, and SQLite's event
    storage costs about 0.9 s a run. A test about what the instance records (runs, sensors, data versions)
    passes `DagsterInstance.get()`, the studio's SQLite instance; the CLI always records there."""
    from dagster import materialize

    from assets_pkg.assets import drop_assets, product_drops
    from assets_pkg.assets import drop_checks
    from orchestration.definitions import build_resources

    instance = instance or in_memory_instance()
    if drop not in instance.get_dynamic_partitions(product_drops.name):
        instance.add_dynamic_partitions(product_drops.name, [drop])
    resources = {**build_resources(), **resource_overrides}
    # Dagster's console log quiet, as the CLI has it: the events are in the result and the instance, and
    # formatting every one of them for pytest's capture cost CPU in every run.
    from assets_pkg.cli.app import quiet

    return materialize([*drop_assets, *drop_checks], partition_key=drop, instance=instance, resources=resources,
                       raise_on_error=False, run_config={**quiet(), **(run_config or {})})



from assets_pkg.run_results import check_results  # noqa: E402,F401  (re-exported for the tests)


def metadata(result, asset: str) -> dict:
    mats = result.asset_materializations_for_node(asset)
    assert mats, f"{asset} was not materialized"
    return {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()}


# The files that take minutes (real servers, `dagster dev`, a browser) start first: `make test` runs a file per
# worker at a time (`-n 3 --dist loadfile`), so with these last one worker would run alone at the end. Those
# that start `dagster dev` (daemon, models, object_store) or a run per step (postgres) are spaced out: three
# of them at once on 2 cores left their runs queued for minutes.
LONG_FILES_FIRST = ("test_daemon.py", "test_milvus_server.py", "test_search_app.py", "test_models.py",
                    "test_review.py", "test_object_store.py", "test_postgres.py")


# Each test's time in the last run (pytest's cache): the files that took longest go out first, so no worker is
# left with a long file when the others are done. A file's own tests keep their order (tests sharing a
# module's world may depend on it). Without a cache (a fresh clone), the order is the files' own.
DURATIONS_KEY = "drop_studio/durations"


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    took = cache.get(DURATIONS_KEY, {}) if cache else {}
    per_file: dict[str, float] = {}
    for item in items:
        per_file[item.path.name] = per_file.get(item.path.name, 0.0) + took.get(item.nodeid, 0.0)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -per_file[item.path.name]))  # stable


_TOOK: dict[str, float] = {}


def pytest_runtest_logreport(report):
    # In xdist's controller the workers' reports arrive here too, so the controller sees every test.
    _TOOK[report.nodeid] = _TOOK.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, config):
    cache = getattr(config, "cache", None)
    if _TOOK and cache and not hasattr(config, "workerinput"):
        cache.set(DURATIONS_KEY, {**cache.get(DURATIONS_KEY, {}), **_TOOK})
