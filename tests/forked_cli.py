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
import subprocess
import sys
import tempfile
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


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    before = set(sys.modules)
    pid = os.fork()
    if pid == 0:  # the command: its own environment, folder and output files; it exits like any process
        os.environ.clear(); os.environ.update(req["env"])
        os.chdir(req["cwd"])
        sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]  # as python would
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY | os.O_TRUNC),
                               (2, req["stderr"], os.O_WRONLY | os.O_TRUNC)):
            os.dup2(os.open(path, mode), fd)
        sys.stdin = open(os.devnull)
        sys.argv = ["drop-studio", *req["args"]]
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
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
    learn(req["imports"])
"""


class ForkedCli:
    """One forking process; `run` is `subprocess.run([python, -m, module, *args])` in effect. Only code that
    the forking process has not imported can be run this way, so an earlier release's checkout runs as well."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.tmp = Path(tempfile.mkdtemp(prefix="forked-cli-"))
        env = {k: v for k, v in os.environ.items() if k != "MILVUS_URI"}  # pymilvus reads it when imported
        self.proc = subprocess.Popen([sys.executable, "-c", _FORKER], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert json.loads(self._line(120)) == {"ready": True}

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError("the forking test process did not answer")
        return line

    def run(self, args: list[str], env: dict, timeout: float, cwd: Path | None = None,
            module: str = "assets_pkg.cli") -> subprocess.CompletedProcess:
        """`python -m module *args` in cwd (default: the repository) with exactly env."""
        out, err = self.tmp / "stdout", self.tmp / "stderr"
        out.write_bytes(b"")
        err.write_bytes(b"")
        self.proc.stdin.write(json.dumps({"args": list(args), "env": env, "cwd": str(cwd or self.cwd), "module": module,
                                          "stdout": str(out), "stderr": str(err),
                                          "imports": str(self.tmp / "imports.json")}) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self._line(30))["pid"]
        try:
            rc = json.loads(self._line(timeout))["rc"]
        except RuntimeError:
            os.kill(pid, signal.SIGKILL)
            self._line(30)
            raise subprocess.TimeoutExpired(["drop-studio", *args], timeout) from None
        return subprocess.CompletedProcess(["drop-studio", *args], rc, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
