"""`drop-studio` commands in fresh processes without paying their imports each time.

A command run as `python -m assets_pkg.cli` spends about 7 s importing torch, clip, dagster and pymilvus before
it does anything, and the tests run it some seventy times. Here one process per test worker imports those
libraries once and forks for every command: each command is still its own process, with its own environment,
working directory and exit status, and it imports Drop Studio itself afresh, so settings read at import time
(`DROP_BATCH` in the backfill policy, the schedules' crons) see that command's environment. Only the
third-party libraries are shared, and they are imported before any setting is known (an earlier release's
`MILVUS_URI`, which pymilvus reads when imported, is not in the forking process's environment).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_FORKER = r"""
import atexit, json, os, runpy, sys, traceback
import warnings
filters = warnings.filters[:]
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
import importlib, sysconfig
import torch, clip, dagster, pymilvus, pandas, PIL.Image, google.genai  # noqa: F401  what every command imports
LIBRARIES = tuple({os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")})


def learn(path):
    # The libraries a command imported beyond those above (Dagster's execution machinery, SQLAlchemy's
    # dialect, alembic, milvus_lite...), imported here so that the next commands fork with them: a run
    # spends almost half its time on these lazy imports otherwise. Only installed libraries, never the
    # repository's own code.
    try:
        names = json.loads(open(path).read())
    except (OSError, ValueError):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name not in sys.modules:
                try:
                    importlib.import_module(name)
                except BaseException:
                    pass


def command(req, job, before):  # in the forked child: never returns
    os.environ.clear(); os.environ.update(req["env"])
    os.chdir(req["cwd"])
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]  # as python would
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, job["stdout"], os.O_WRONLY | os.O_TRUNC | os.O_CREAT),
                           (2, job["stderr"], os.O_WRONLY | os.O_TRUNC | os.O_CREAT)):
        os.dup2(os.open(path, mode, 0o600), fd)
    sys.stdin = open(os.devnull)
    sys.argv = ["drop-studio", *job["args"]]
    warnings.filters[:] = filters
    code = 0
    try:
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:  # sys.exit("message"): printed, status 1, as Python does
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    # What an exiting interpreter does that a command can notice (atexit handlers, flushed output), without
    # tearing down a process's worth of torch objects, which takes a second or two per command.
    atexit._run_exitfuncs()
    sys.stdout.flush(); sys.stderr.flush()
    try:
        new = [n for n, m in list(sys.modules.items()) if n not in before and
               os.path.realpath(getattr(m, "__file__", None) or "/").startswith(LIBRARIES)]
        with open(req["imports"], "w") as f:
            json.dump(new, f)
    except BaseException:
        pass
    os._exit(code)


def serve(path):
    # One process serves every test worker: each connection sends a request per line and gets, per request,
    # a line with the commands' pids at once and a line with their exit statuses when all have ended.
    # Requests of different workers run side by side; learning imports waits until none is running.
    import select, socket
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the socket appears once the libraries are imported
    clients, running, to_learn = {}, {}, []  # socket -> unread bytes; pid -> its request; imports files
    while True:
        if not running:
            for imports in to_learn:
                learn(imports)
            to_learn.clear()
        ready, _, _ = select.select([listener, *clients], [], [], 0.02 if running else 1.0)
        if os.getppid() != parent:  # the test session is gone
            os._exit(0)
        for conn in ready:
            if conn is listener:
                clients[listener.accept()[0]] = b""
                continue
            data = conn.recv(1 << 16)
            if not data:
                del clients[conn]
                conn.close()
                continue
            clients[conn] += data
            while b"\n" in clients[conn]:
                line, _, clients[conn] = clients[conn].partition(b"\n")
                req = json.loads(line)
                sys.stdout.flush(); sys.stderr.flush()
                before = set(sys.modules)
                request = {"conn": conn, "pids": [], "codes": {}, "imports": req["imports"]}
                for job in req["jobs"]:  # several jobs run at once (two runs of one drop racing each other)
                    pid = os.fork()
                    if pid == 0:
                        listener.close()
                        for other in clients:
                            other.close()
                        command(req, job, before)
                    request["pids"].append(pid)
                    running[pid] = request
                conn.sendall((json.dumps({"pids": request["pids"]}) + "\n").encode())
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            request = running.pop(pid, None)
            if request is None:
                continue
            request["codes"][pid] = os.waitstatus_to_exitcode(status)
            if len(request["codes"]) == len(request["pids"]):
                to_learn.append(request["imports"])
                try:
                    request["conn"].sendall((json.dumps({"rcs": [request["codes"][p] for p in request["pids"]]}) + "\n").encode())
                except OSError:
                    pass  # that worker is gone


serve(sys.argv[1])
"""


SHARED = "DROP_STUDIO_TEST_FORKER"  # the socket of the session's forking process, for every test worker


def start_server(cwd: Path) -> tuple[subprocess.Popen, str]:
    """A forking process listening at a new socket (it appears once the libraries are imported)."""
    path = str(Path(tempfile.mkdtemp(prefix="forker-")) / "socket")
    env = {k: v for k, v in os.environ.items() if k != "MILVUS_URI"}  # pymilvus reads it when imported
    proc = subprocess.Popen([sys.executable, "-c", _FORKER, path], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, path


class ForkedCli:
    """A connection to a forking process (the session's shared one at `path`, else one of its own); `run` is
    `subprocess.run([python, -m, module, *args])` in effect. Only code that the forking process has not
    imported can be run this way, so an earlier release's checkout runs as well."""

    def __init__(self, cwd: Path, path: str | None = None):
        self.cwd = cwd
        self.tmp = Path(tempfile.mkdtemp(prefix="forked-cli-"))
        self.proc = None
        if path is None:
            self.proc, path = start_server(cwd)
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 300  # importing torch, clip and dagster on a loaded machine
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                    raise RuntimeError(f"the forking test process at {path} did not start") from None
                time.sleep(0.1)
        self.buffer = b""

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            data = self.sock.recv(1 << 16) if ready else b""
            if not data:
                raise RuntimeError("the forking test process did not answer")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def run(self, args: list[str], env: dict, timeout: float, cwd: Path | None = None,
            module: str = "assets_pkg.cli") -> subprocess.CompletedProcess:
        """`python -m module *args` in cwd (default: the repository) with exactly env."""
        return self.run_at_once([args], env, timeout, cwd, module)[0]

    def run_at_once(self, commands: list[list[str]], env: dict, timeout: float, cwd: Path | None = None,
                    module: str = "assets_pkg.cli") -> list[subprocess.CompletedProcess]:
        """Each `python -m module *args` of commands, all started together; returns when all have ended."""
        jobs = [{"args": list(args), "stdout": str(self.tmp / f"stdout{i}"), "stderr": str(self.tmp / f"stderr{i}")}
                for i, args in enumerate(commands)]
        self.sock.sendall((json.dumps({"jobs": jobs, "env": env, "cwd": str(cwd or self.cwd), "module": module,
                                       "imports": str(self.tmp / "imports.json")}) + "\n").encode())
        pids = json.loads(self._line(60))["pids"]
        try:
            rcs = json.loads(self._line(timeout))["rcs"]
        except RuntimeError:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._line(30)
            raise subprocess.TimeoutExpired(["drop-studio", *commands[0]], timeout) from None
        return [subprocess.CompletedProcess(["drop-studio", *job["args"]], rc,
                                            Path(job["stdout"]).read_text(errors="replace"),
                                            Path(job["stderr"]).read_text(errors="replace"))
                for job, rc in zip(jobs, rcs)]

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.sock.close()
        if self.proc is not None:
            stop_server(self.proc)


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
