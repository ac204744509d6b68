"""Start a real `tritonserver` on a recon model repository, on a machine without the NGC container.

    .triton-venv/bin/python -m recon.export.triton_server models/      # after `make triton-env`

Runs inside the server's own venv (`make triton-env`: numpy < 2, nvidia-pytriton, onnxruntime, recon). The
nvidia-pytriton 0.7.0 wheel bundles the tritonserver 2.51 binary and the python backend, laid out as (checked
in the installed wheel):

    pytriton/tritonserver/bin/tritonserver
    pytriton/tritonserver/backends/python/{libtriton_python.so, triton_python_backend_utils.py}
    pytriton/tritonserver/python_backend_stubs/3.X/triton_python_backend_stub

The stub for this interpreter's version must sit beside libtriton_python.so, so the python backend is copied
once into `<venv>/share/recon-triton/backends/python/` with the stub (the wheel's own folder stays as
installed). The stub links the system's libpython but loads the running interpreter's stdlib: the
interpreter's LIBDIR goes first on LD_LIBRARY_PATH (a pyenv 3.11.7 against a system 3.11.2 otherwise fails
with "'_thread.RLock' object has no attribute '_recursion_count'"); it takes site-packages from the first
`python3` on PATH, so this venv's bin goes first. Only the python-backend models load by default (this
server has no onnxruntime or TensorRT backend): model control is explicit, one `--load-model` each.

Imports nothing from recon (it must run before and without any artifact); execs the server, so the PID
the caller sees is tritonserver's and a signal stops it directly.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


class ServerSetupError(RuntimeError):
    """The server cannot be started here (wheel missing, no stub for this Python, no model to load)."""


def pytriton_root() -> Path:
    """The wheel's `pytriton/tritonserver` folder in this interpreter's environment."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise ServerSetupError(
            f"nvidia-pytriton is not installed for {sys.executable}; run `make triton-env` and use "
            ".triton-venv/bin/python"
        )
    root = Path(spec.origin).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerSetupError(f"{root}/bin/tritonserver missing: nvidia-pytriton's layout changed")
    return root


def backend_directory(root: Path | None = None) -> Path:
    """A backends folder whose python backend has the stub for this interpreter (copied once, idempotent)."""
    root = root or pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerSetupError(f"nvidia-pytriton has no python backend stub for Python {version} ({stub})")
    target = Path(sys.prefix) / "share" / "recon-triton" / "backends"
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    sources = [p for p in (root / "backends" / "python").iterdir() if p.is_file()] + [stub]
    for source in sources:
        copy = python / source.name
        if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
            partial = copy.with_name(f".{copy.name}.{os.getpid()}")
            shutil.copy2(source, partial)
            os.replace(partial, copy)  # a concurrent starter never sees half a stub
    return target


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH for the stub (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    # the copied stub's RPATH ($ORIGIN/../../../../nvidia_pytriton.libs) no longer points at the wheel's libs
    wheel_libs = str(pytriton_root().parent.parent / "nvidia_pytriton.libs")
    paths = (libdir, wheel_libs, env.get("LD_LIBRARY_PATH", ""))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("PYTHONPATH", None)  # the stub ignores it anyway; the venv's site-packages decide
    return env


def python_models(repo: Path) -> list[str]:
    """The repository's python-backend models (the only kind this server can load)."""
    names = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        if re.search(r'^\s*backend:\s*"python"', config.read_text(), re.MULTILINE):
            names.append(config.parent.name)
    return names


def server_command(
    repo: Path,
    models: list[str],
    *,
    ports: dict[str, int] | None = None,
    address: str = "127.0.0.1",
    shm_prefix: str | None = None,
    log_verbose: int = 0,
) -> list[str]:
    """The tritonserver command line: bound to `address`, explicit model control, one line per option."""
    root = pytriton_root()
    ports = {**DEFAULT_PORTS, **(ports or {})}
    command = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={backend_directory(root)}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in models),
        f"--http-address={address}",
        f"--http-port={ports['http']}",
        f"--grpc-address={address}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-address={address}",
        f"--metrics-port={ports['metrics']}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=10",  # a stop waits this long for in-flight requests, not 30 s
        f"--log-verbose={log_verbose}",
    ]
    if shm_prefix:  # the python backend's /dev/shm segments get this prefix: findable after a crash
        command.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    return command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recon.export.triton_server",
        description="Serve a recon Triton repository's python-backend models with the tritonserver "
        "bundled in nvidia-pytriton (127.0.0.1 only). Ctrl-C or `kill PID` stops it.",
    )
    parser.add_argument("repo", type=Path, help="model repository written by recon-export --triton-repo")
    parser.add_argument("--model", action="append", help="model to load (repeatable) [all python models]")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help=f"[{port}]")
    parser.add_argument("--shm-prefix", help="python backend shared-memory prefix [Triton's default]")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the command and environment only")
    args = parser.parse_args(argv)
    try:
        repo = args.repo.resolve()
        if not repo.is_dir():
            raise ServerSetupError(f"{args.repo} is not a folder; write one with recon-export --triton-repo")
        models = args.model or python_models(repo)
        if not models:
            raise ServerSetupError(
                f"{args.repo} holds no python-backend model; export with --triton-flavour python or both"
            )
        ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS}
        command = server_command(
            repo, models, ports=ports, shm_prefix=args.shm_prefix, log_verbose=args.log_verbose
        )
    except ServerSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    env = server_environment()
    if args.dry_run:
        print(" ".join(command))
        print(f"PATH={env['PATH']}\nLD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}")
        return
    print(f"tritonserver: models {', '.join(models)} on http://127.0.0.1:{ports['http']}", file=sys.stderr)
    sys.stderr.flush()
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()


# -- a server process owned by a test or a benchmark (runs in any venv: stdlib only) ------------------------
def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (held open together, so they differ; released on return)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_channel(pid: int) -> str:
    """`pid: <state> <wchan>` from /proc (what the kernel says a process waits on), or why not."""
    try:
        state = next(
            line.split(":", 1)[1].strip()
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("State:")
        )
        return f"{pid}: {state} {Path(f'/proc/{pid}/wchan').read_text().strip() or '-'}"
    except (OSError, StopIteration) as error:
        return f"{pid}: {type(error).__name__}"


class LocalServer:
    """A tritonserver child process on 127.0.0.1 with free ports, started from the server's venv.

    `python` is that venv's interpreter (`.triton-venv/bin/python`); the launcher above runs in it and execs
    tritonserver, so `pid` is the server's. Every python-backend shared-memory segment and stub process
    carries `shm_prefix`, so `leftovers()` can find what a stop or a crash left behind.
    """

    def __init__(self, repo: Path, python: Path, log: Path, models: list[str] | None = None) -> None:
        self.repo, self.python, self.log_path, self.models = Path(repo), Path(python), Path(log), models
        http, grpc, metrics = free_ports(3)
        self.ports = {"http": http, "grpc": grpc, "metrics": metrics}
        self.shm_prefix = f"recon_triton_{os.getpid()}_{http}_"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 120.0) -> LocalServer:
        command = [str(self.python), "-m", "recon.export.triton_server", str(self.repo)]
        command += [f"--shm-prefix={self.shm_prefix}", *(f"--model={m}" for m in self.models or [])]
        command += [f"--{name}-port={port}" for name, port in self.ports.items()]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.repo
            )
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise ServerSetupError(f"tritonserver exited with {code} before ready:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        self.kill()
        raise ServerSetupError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM to the PID and wait (Triton drains for --exit-timeout-secs); SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash. Its stubs exit on their own once they see the parent gone (see leftovers)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stub_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.shm_prefix.encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:  # gone meanwhile
                    pass
        return pids

    def shm_segments(self) -> list[Path]:
        return sorted(Path("/dev/shm").glob(f"{self.shm_prefix}*"))

    def leftovers(self) -> dict[str, list]:
        """What this server left: live processes (server, stubs), listening ports, /dev/shm segments."""
        alive = [] if self.process is None or self.process.poll() is not None else [self.process.pid]
        return {
            "processes": alive + self.stub_pids(),
            "ports": [p for p in self.ports.values() if port_in_use(p)],
            "shm": [str(p) for p in self.shm_segments()],
        }

    def clean_after_crash(self, timeout: float = 30.0) -> dict[str, list]:
        """After `kill`: wait for the stubs to exit, kill those that do not, remove this server's segments;
        return what was left before that."""
        deadline = time.monotonic() + timeout
        while self.stub_pids() and time.monotonic() < deadline:
            time.sleep(0.25)
        left = self.leftovers()
        # what a stub that outlived its server was doing (kernel wait channel), for the log: a stub caught
        # mid-request when the server died can stay blocked on the IPC to its dead parent
        left["stub_waits"] = [_wait_channel(pid) for pid in self.stub_pids()]
        for pid in self.stub_pids():  # only ours: their command line holds our unique prefix
            os.kill(pid, signal.SIGKILL)
        for segment in self.shm_segments():
            segment.unlink(missing_ok=True)
        return left
