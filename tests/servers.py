"""Real servers for the tests, started on loopback and killed for sure: Milvus 2.3 standalone (PyPI
`milvus`) and PostgreSQL (Debian `postgresql`).

A server that cannot start raises `Unavailable`; tests turn that into a skip with a printed reason,
except under CI (CI=true), where it is a failure: CI must prove the server paths."""

from __future__ import annotations

import glob
import os
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
        from assets_pkg.domain.store import MilvusClient

        try:
            MilvusClient(uri=self.uri, token=self.TOKEN, timeout=5).close()
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group (SIGTERM does not always stop it) and wait for the port."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc.stdin.close()
        self._log.close()
        self.proc = None
        deadline = time.time() + 30
        while self.port and port_open(self.port) and time.time() < deadline:
            time.sleep(0.3)


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
