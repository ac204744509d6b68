"""Plant the GPU path's known bugs one at a time in a temporary copy; check the CPU tests catch each.

    python scripts/mutation_gpu.py          # exit 0 when the clean copy passes and every bug is caught

Issue 28 found that these four bugs left every CPU-side test green. Each is planted by a text replacement
(which must match exactly once, so a refactor that moves the code fails here loudly instead of planting
nothing) in a copy of the tracked files; the copy is imported through a `recon` folder of links to it
(PYTHONPATH), ahead of the installed (editable) recon, and the GPU-path tests run against it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/export/test_tensorrt.py", "tests/runtime/test_tensorrt_backend.py"]
PACKAGES = {"runtime": "runtime", "export": "export", "training": "training", "weights": "weights"}

# name -> (file, text in the code, the bug in its place)
MUTATIONS = {
    "tf32 set instead of cleared": (
        "export/tensorrt_build.py",
        "            config.clear_flag(getattr(trt.BuilderFlag, flag))",
        "            config.set_flag(getattr(trt.BuilderFlag, flag))",
    ),
    "tf32 left out of the settings": (
        "export/tensorrt_build.py",
        '        clear_flags=("TF32",),',
        "        clear_flags=(),",
    ),
    "strongly-typed flag without 1 <<": (
        "export/tensorrt_build.py",
        "        flags |= 1 << int(",
        "        flags |= int(",
    ),
    "host and device copies swapped": (
        "runtime/backends/tensorrt.py",
        '        Copy(dev_in, host_in, in_bytes, "cudaMemcpyHostToDevice"),\n'
        '        Copy(host_out, dev_out, out_bytes, "cudaMemcpyDeviceToHost"),',
        '        Copy(dev_in, host_in, in_bytes, "cudaMemcpyDeviceToHost"),\n'
        '        Copy(host_out, dev_out, out_bytes, "cudaMemcpyHostToDevice"),',
    ),
    "host-code opt-in removed": (
        "runtime/backends/tensorrt.py",
        "        runtime.engine_host_code_allowed = True\n",
        "        pass\n",
    ),
}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def make_copy(dest: Path) -> None:
    """The tracked files (with their working-tree contents) and a `.shim/recon` of links for PYTHONPATH."""
    for name in tracked_files():
        source = ROOT / name
        if not source.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    shim = dest / ".shim" / "recon"
    shim.mkdir(parents=True)
    for package, folder in PACKAGES.items():
        (shim / package).symlink_to(dest / folder, target_is_directory=True)


def plant(dest: Path, file: str, old: str, new: str) -> None:
    path = dest / file
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"cannot plant: {file} holds the text {text.count(old)} times, not once: {old!r}")
    path.write_text(text.replace(old, new))


def run_tests(dest: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(dest / ".shim")}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *TESTS]
    proc = subprocess.run(command, cwd=dest, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("FAILED")]
    return proc.returncode, (failed[0] if failed else (lines[-1] if lines else proc.stderr[-300:]))


def which_recon(dest: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(dest / ".shim")}
    code = "import recon.export.tensorrt_build as m; print(m.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=dest, env=env, capture_output=True, text=True)
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run just this mutation (a name of MUTATIONS)")
    args = parser.parse_args(argv)
    chosen = {args.only: MUTATIONS[args.only]} if args.only else MUTATIONS
    results = []
    with tempfile.TemporaryDirectory(prefix="recon-mutation-") as tmp:
        clean = Path(tmp) / "clean"
        make_copy(clean)
        if not which_recon(clean).startswith(str(clean)):  # the copy must be what the tests import
            print(f"error: the copy is not imported ({which_recon(clean).strip()})", file=sys.stderr)
            return 2
        start = time.perf_counter()
        code, line = run_tests(clean)
        print(f"clean copy: {'pass' if code == 0 else 'FAIL'} ({time.perf_counter() - start:.0f} s) {line}")
        if code != 0:
            return 1
        for name, (file, old, new) in chosen.items():
            dest = Path(tmp) / name.replace(" ", "-")
            make_copy(dest)
            plant(dest, file, old, new)
            code, line = run_tests(dest)
            caught = code != 0
            results.append(caught)
            print(f"{name}: {'caught' if caught else 'NOT CAUGHT'} — {line}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
