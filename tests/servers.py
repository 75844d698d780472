"""Real servers for the tests, started on loopback and killed for sure: Milvus 2.3 standalone (PyPI
`milvus`), PostgreSQL (Debian `postgresql`), an S3-compatible object store (PyPI `moto[server]`) and a
Google Cloud Storage emulator (PyPI `gcp-storage-emulator`).

A server that cannot start raises `Unavailable`; tests turn that into a skip with a printed reason,
except under CI (CI=true), where it is a failure: CI must prove the server paths."""

from __future__ import annotations

import glob
import json
import os
import re
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml


class Unavailable(RuntimeError):
    pass


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a server's whole process group (it was started in a session of its own) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _wait(until, proc: subprocess.Popen | None, seconds: float, what: str, log: Path) -> None:
    deadline = time.time() + seconds
    while not until():
        if (proc is not None and proc.poll() is not None) or time.time() > deadline:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise Unavailable(f"{what} did not come up: {tail}")
        time.sleep(0.5)


class MilvusServer:
    """`milvus-server --data DIR --authorization-enabled true` (login root:Milvus).

    `kill()` then `start()` on the same data folder is a crash and a restart."""

    TOKEN = "root:Milvus"

    def __init__(self, data: Path):
        self.data = Path(data)
        self.port: int | None = None  # chosen by the launcher at start
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> "MilvusServer":
        exe = Path(sys.executable).with_name("milvus-server")
        if not exe.exists():
            raise Unavailable(f"{exe} not installed (pip install milvus)")
        self.data.mkdir(parents=True, exist_ok=True)
        config = self.data / "configs" / "milvus.yaml"
        config.unlink(missing_ok=True)
        self._log = open(self.data / "server.log", "a")
        # stdin stays open: milvus-server waits on it ("Ctrl+C to exit") and quits at end of input.
        self.proc = subprocess.Popen(
            [str(exe), "--data", str(self.data), "--authorization-enabled", "true",
             # A killed server's session must expire before a restarted one can serve (30 s by default).
             "--extra-config", "common.session.ttl=5"],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        # The launcher moves to the next free port when one is taken (after a crash, 19530 stays in
        # TIME_WAIT for a minute), so read the port it chose from the config it writes.
        _wait(lambda: config.exists() and self._proxy_port(config) is not None, self.proc, 60,
              "milvus-server config", self.data / "server.log")
        self.port = self._proxy_port(config)
        _wait(self._ready, self.proc, timeout, "milvus-server", self.data / "server.log")
        return self

    @staticmethod
    def _proxy_port(config: Path) -> int | None:
        try:
            return int(yaml.safe_load(config.read_text())["proxy"]["port"])
        except Exception:  # being written
            return None

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        from assets_pkg.domain.milvus import pymilvus

        try:
            pymilvus().MilvusClient(uri=self.uri, token=self.TOKEN, timeout=5).close()
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group (SIGTERM does not always stop it) and wait for the port."""
        if self.proc is None:
            return
        kill_group(self.proc)
        self.proc.stdin.close()
        self._log.close()
        self.proc = None
        deadline = time.time() + 30
        while self.port and port_open(self.port) and time.time() < deadline:
            time.sleep(0.3)


class _Process:
    """A server we start on a free loopback port with its output in `log`, and kill (its whole process group)
    for sure."""

    def __init__(self, root: Path, log_name: str):
        self.root = Path(root)
        self.log = self.root / log_name
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _launch(self, exe_name: str, package: str, args: list[str], timeout: float, env: dict | None = None) -> None:
        exe = Path(sys.executable).with_name(exe_name)
        if not exe.exists():
            raise Unavailable(f"{exe} not installed (pip install '{package}')")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([str(exe), *args, str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        _wait(lambda: port_open(self.port), self.proc, timeout, exe_name, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
        self.proc = None


class S3Server(_Process):
    """moto's standalone S3-compatible server with signature checks on (`INITIAL_NO_AUTH_ACTION_COUNT`):
    its first requests create an IAM user and key, every later request must be signed with that key, so a
    wrong secret is refused as by AWS. The request log counts what clients asked for (`gets`)."""

    REGION = "us-east-1"

    def __init__(self, root: Path):
        super().__init__(root, "moto.log")
        self.key_id = self.secret = ""

    def start(self, timeout: float = 60) -> "S3Server":
        # The three unsigned requests are the IAM calls below; from then on, signatures are checked.
        self._launch("moto_server", "moto[server]", ["-H", "127.0.0.1", "-p"], timeout,
                     env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=self.REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="studio")
        iam.put_user_policy(UserName="studio", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="studio")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    def env(self) -> dict[str, str]:
        """The standard variables s3fs (and every AWS SDK) reads."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": self.REGION}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.REGION,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request so far, from the server's access log."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = re.search(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/', line)
            if m:
                found.append((m.group(1), m.group(2)))
        return found

    def gets(self, under: str) -> int:
        """Object downloads (GETs of keys, not listings) under `bucket/prefix`."""
        return sum(1 for method, path in self.requests()
                   if method == "GET" and path.startswith("/" + under) and "?" not in path)


class GcsServer(_Process):
    """`gcp-storage-emulator` (PyPI), a Google Cloud Storage JSON API on loopback, in memory; gcsfs finds it
    through the standard `STORAGE_EMULATOR_HOST`. It checks no credentials (nor does the emulator Google
    ships), so access errors are tested against S3 only."""

    def __init__(self, root: Path):
        super().__init__(root, "gcs.log")

    def start(self, buckets: list[str], timeout: float = 60) -> "GcsServer":
        self._launch("gcp-storage-emulator", "gcp-storage-emulator",
                     ["start", "--in-memory", "--default-bucket", ",".join(buckets), "--host", "127.0.0.1", "--port"],
                     timeout)
        return self

    def env(self) -> dict[str, str]:
        # gcsfs asks the Storage Control API (not emulated) whether a bucket is hierarchical; off here.
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def downloads(self, bucket: str, prefix: str) -> int:
        """Object downloads (not listings) under `prefix`, from the emulator's access log."""
        quoted = prefix.replace("/", "%2F")
        return sum(1 for line in self.log.read_text(errors="replace").splitlines()
                   if f"GET /download/storage/v1/b/{bucket}/o/{quoted}" in line)


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback (initdb + pg_ctl from the Debian package).

    PostgreSQL refuses to run as root, so as root the cluster is owned by and run as `postgres`."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.user, self.password, self.db = "dagster", "test-only-password", "dagster"
        self._bin = _pg_bindir()

    def _as_owner(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, **kw)

    def start(self) -> "PostgresServer":
        if self._bin is None:
            raise Unavailable("PostgreSQL is not installed (apt-get install postgresql; `make test` does it)")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root but there is no `postgres` user to own the cluster") from None
        self.root.mkdir(parents=True, exist_ok=True)
        data, pwfile = self.root / "data", self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        r = self._as_owner([str(self._bin / "initdb"), "-D", str(data), "-U", self.user, "--pwfile", str(pwfile),
                            "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"])
        if r.returncode:
            raise Unavailable(f"initdb failed: {(r.stderr or r.stdout)[-500:]}")
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} -c fsync=off"
        r = self._as_owner([str(self._bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"),
                            "-o", opts, "-w", "-t", "60", "start"])
        if r.returncode:
            raise Unavailable(f"pg_ctl start failed: {(r.stderr or r.stdout)[-500:]}")
        r = self._as_owner([str(self._bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                            self.db], env={**os.environ, "PGPASSWORD": self.password})
        if r.returncode:
            self.stop()
            raise Unavailable(f"createdb failed: {(r.stderr or r.stdout)[-500:]}")
        return self

    @property
    def env(self) -> dict[str, str]:
        """The variables the shipped `orchestration/dagster-postgres.yaml` reads."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}

    def stop(self) -> None:
        if self._bin is not None and (self.root / "data" / "postmaster.pid").exists():
            self._as_owner([str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])


def unavailable(reason: str):
    """Skip with a printed reason, or fail under CI, where every server must run."""
    if os.environ.get("CI"):
        pytest.fail(f"server needed in CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def chrome():
    """Headless Chromium under Selenium (Debian's chromium and chromium-driver, which `make test` installs)."""
    if not shutil.which("chromedriver") or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        unavailable("chromium and chromium-driver not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def started(server, **start_args):
    """`server`, started; if it cannot start, a skip (or a failure under CI) with the reason."""
    try:
        return server.start(**start_args)
    except Unavailable as e:
        unavailable(str(e))


class TcpRelay:
    """A loopback TCP relay to a server, which the test can cut and restore: a network blip."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> "TcpRelay":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if listener is not self._listener:  # cut while connecting: this one must not survive
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            self._listener.close()
            self._listener = None
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._sockets.clear()


class Serve:
    """`drop-studio serve` on a free loopback port, its output appended to `log`, killed for sure."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "assets_pkg.cli", "serve", "--port", str(self.port)],
                                     cwd=Path(__file__).resolve().parents[1], env=env, stdout=open(log, "a"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while not port_open(self.port):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)

    def get(self, route: str, **params) -> requests.Response:
        return requests.get(self.url + route, params=params, timeout=60)

    def post(self, route: str, data: bytes, headers: dict | None = None, **params) -> requests.Response:
        return requests.post(self.url + route, params=params, data=data, headers=headers or {}, timeout=60)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> "Serve":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class DagsterDev:
    """`dagster dev` (webserver and daemon, as users start them) on the shipped workspace, on loopback,
    in the environment `env` (DAGSTER_HOME and the studio settings); the process group is killed for sure."""

    ROOT = Path(__file__).resolve().parents[1]

    def __init__(self, env: dict, log: Path):
        self.env = env
        self.log_path = Path(log)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "DagsterDev":
        from dagster import DagsterInstance

        # Create the SQLite instance once, here: the webserver and the daemon would race on its schema.
        with DagsterInstance.from_config(self.env["DAGSTER_HOME"]):
            pass
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml",
             "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=self.ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(lambda: self._get("/server_info") is not None, self.proc, timeout, "dagster dev", self.log_path)
        return self

    def _get(self, path: str):
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.read()
        except OSError:
            return None

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        import json
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", headers={"Content-Type": "application/json"},
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.load(resp)
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch(self, job: str, partition: str) -> str:
        """Launch a job for one drop as the UI's Launchpad does; returns the run id."""
        data = self.graphql(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
            {"p": {"selector": {"repositoryLocationName": "drop_studio", "repositoryName": "__repository__",
                                "jobName": job},
                   "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]}}},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {job} for {partition}: {data}")
        return data["run"]["runId"]

    def stop_sensor(self, name: str) -> None:
        """Turn a sensor off, as the toggle in the UI does."""
        selector = {"repositoryLocationName": "drop_studio", "repositoryName": "__repository__", "sensorName": name}
        state = self.graphql("query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { "
                             "... on Sensor { sensorState { id } } } }", {"s": selector})
        result = self.graphql("mutation($id: String) { stopSensor(id: $id) { __typename } }",
                              {"id": state["sensorOrError"]["sensorState"]["id"]})
        if result["stopSensor"]["__typename"] != "StopSensorMutationResult":
            raise RuntimeError(f"stopping {name}: {result}")
        # A tick already under way when the toggle flips still finishes (and may launch runs): wait for it,
        # so that what the caller changes next is seen by no tick of this sensor.
        deadline = time.time() + 60
        while time.time() < deadline:
            ticks = self.graphql("query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { "
                                 "sensorState { ticks(limit: 1) { status } } } } }", {"s": selector})
            latest = ticks["sensorOrError"]["sensorState"]["ticks"]
            if not latest or latest[0]["status"] != "STARTED":
                return
            time.sleep(0.5)
        raise RuntimeError(f"{name}: a tick still running 60 s after the sensor was stopped")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        self.proc = None

    def __enter__(self) -> "DagsterDev":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# How long a test waits for a run that `dagster dev` or a plain `dagster job execute` starts: each run is a
# process that imports torch and Dagster, and on 2 cores shared by three test workers (two of them perhaps
# running `dagster dev` too) one run can take minutes to get through its queue. A bound, not an expectation.
RUN_WAIT_S = 600


def wait_for_runs(instance, done, timeout: float, what: str, poll: float = 1.0):
    """Poll the instance until `done(runs)` returns a true value (returned); runs newest first."""
    deadline = time.time() + timeout
    while True:
        runs = instance.get_runs()
        result = done(runs)
        if result:
            return result
        if time.time() > deadline:
            summary = [(r.job_name, r.tags.get("dagster/partition"), r.status.value) for r in runs]
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; runs: {summary}")
        time.sleep(poll)


def run_timings(instance, run_id: str) -> dict:
    """Wall time of a launched run (the launcher starting its process -> the run's end), the sum of its
    steps' own durations, the time its steps waited for a `gpu` pool slot and the time from launch to the
    run's process starting to execute, from the run's events."""
    from dagster import DagsterEventType

    events = instance.all_logs(run_id)
    at = {e.dagster_event.event_type: e.timestamp for e in events if e.dagster_event}
    started: dict[str, float] = {}
    blocked_since: dict[str, float] = {}
    steps = blocked = 0.0
    for e in events:
        kind = e.dagster_event.event_type if e.dagster_event else None
        if kind == DagsterEventType.ENGINE_EVENT and (e.message or "").startswith("Step blocked by limit for pool"):
            blocked_since.setdefault(e.step_key, e.timestamp)
        if kind == DagsterEventType.STEP_START:
            if e.step_key in blocked_since:
                blocked += e.timestamp - blocked_since.pop(e.step_key)
            started[e.step_key] = e.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and e.step_key in started:
            steps += e.timestamp - started.pop(e.step_key)
    end = at.get(DagsterEventType.RUN_SUCCESS) or at.get(DagsterEventType.RUN_FAILURE)
    launched = at.get(DagsterEventType.RUN_STARTING) or at.get(DagsterEventType.RUN_START)
    return {"wall_s": round(end - launched, 2), "steps_s": round(steps, 2), "gpu_wait_s": round(blocked, 2),
            "startup_s": round(at[DagsterEventType.RUN_START] - launched, 2),
            "queued_s": round(launched - at[DagsterEventType.RUN_ENQUEUED], 2)
            if DagsterEventType.RUN_ENQUEUED in at else None}
