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


def command(req, job):  # in the forked child: never returns
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


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    before = set(sys.modules)
    pids = []
    for job in req["jobs"]:  # several jobs run at once (two runs of one drop racing each other)
        pid = os.fork()
        if pid == 0:
            command(req, job)
        pids.append(pid)
    print(json.dumps({"pids": pids}), flush=True)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps({"rcs": codes}), flush=True)
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
        return self.run_at_once([args], env, timeout, cwd, module)[0]

    def run_at_once(self, commands: list[list[str]], env: dict, timeout: float, cwd: Path | None = None,
                    module: str = "assets_pkg.cli") -> list[subprocess.CompletedProcess]:
        """Each `python -m module *args` of commands, all started together; returns when all have ended."""
        jobs = [{"args": list(args), "stdout": str(self.tmp / f"stdout{i}"), "stderr": str(self.tmp / f"stderr{i}")}
                for i, args in enumerate(commands)]
        self.proc.stdin.write(json.dumps({"jobs": jobs, "env": env, "cwd": str(cwd or self.cwd), "module": module,
                                          "imports": str(self.tmp / "imports.json")}) + "\n")
        self.proc.stdin.flush()
        pids = json.loads(self._line(30))["pids"]
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
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
