"""`pip install rnnc` resolves on every platform we claim: onnxruntime-gpu where PyPI has its
wheels (Linux x86_64, Windows AMD64), onnxruntime elsewhere (macOS, Linux aarch64), and h5py
(for `rnnc import keras`) everywhere.

The markers are checked offline. The resolution is checked against PyPI with
`pip install --dry-run --platform ...` (slow; skipped, with the reason, when PyPI cannot be
reached or RNNC_OFFLINE=1). pip evaluates environment markers against the running
interpreter even with --platform, so the test evaluates them for each target itself and
hands pip the requirements that apply there."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# (platform tags for pip (it does not add the older compatible ones itself), marker environment, the ONNX Runtime build expected there)
TARGETS = {
    "macos-arm64": (["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64"], {"platform_system": "Darwin", "platform_machine": "arm64",
                                          "sys_platform": "darwin"}, "onnxruntime"),
    "linux-x86_64": ([f"manylinux_2_{v}_x86_64" for v in (28, 27, 17)] + ["manylinux2014_x86_64"], {"platform_system": "Linux", "platform_machine": "x86_64",
                                               "sys_platform": "linux"}, "onnxruntime-gpu"),
    "linux-aarch64": ([f"manylinux_2_{v}_aarch64" for v in (28, 27, 17)] + ["manylinux2014_aarch64"], {"platform_system": "Linux", "platform_machine": "aarch64",
                                                 "sys_platform": "linux"}, "onnxruntime"),
}
OTHERS = [({"platform_system": "Windows", "platform_machine": "AMD64", "sys_platform": "win32"}, "onnxruntime-gpu"),
          ({"platform_system": "Windows", "platform_machine": "ARM64", "sys_platform": "win32"}, "onnxruntime"),
          ({"platform_system": "Darwin", "platform_machine": "x86_64", "sys_platform": "darwin"}, "onnxruntime")]


def requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in (project["optional-dependencies"][extra] if extra else project["dependencies"])]


def applying(env: dict[str, str]) -> list[Requirement]:
    full = {"python_version": "3.11", "python_full_version": "3.11.9", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "nt" if env["platform_system"] == "Windows"
            else "posix", **env}
    return [r for r in requirements() if r.marker is None or r.marker.evaluate(full)]


@pytest.mark.parametrize("env, runtime", [(t[1], t[2]) for t in TARGETS.values()] + OTHERS,
                         ids=[*TARGETS, "windows-amd64", "windows-arm64", "macos-x86_64"])
def test_exactly_one_onnxruntime_build_per_platform(env, runtime):
    names = [r.name for r in applying(env)]
    assert [n for n in names if n.startswith("onnxruntime")] == [runtime], names
    assert "h5py" in names      # `rnnc import keras` works after the README's first command


def test_test_extras_do_not_pin_torch_to_one_build():
    torch = next(r for r in requirements("test") if r.name == "torch")
    assert "==" not in str(torch.specifier) and torch.specifier.contains("2.13.0"), torch


def _pypi_reachable() -> str | None:
    if os.environ.get("RNNC_OFFLINE") == "1":
        return "RNNC_OFFLINE=1"
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError as e:
        return f"PyPI cannot be reached ({e})"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("target", list(TARGETS))
def test_dependencies_resolve_on_pypi(target, tmp_path):
    why = _pypi_reachable()
    if why:
        pytest.skip(f"{why}: the dry-run install against PyPI is not checked")
    platforms, env, runtime = TARGETS[target]
    reqs = [str(r).split(";")[0] for r in applying(env)]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
           "--index-url", "https://pypi.org/simple", *(a for p in platforms for a in ("--platform", p)), "--only-binary=:all:",
           "--python-version", "3.11", "--target", str(tmp_path / "t"), *reqs]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("pip install --dry-run against PyPI took over 240 s: not checked")
    out = r.stdout + r.stderr
    if r.returncode and any(s in out for s in ("Could not fetch URL", "connection", "Connection", "timed out")):
        pytest.skip(f"PyPI could not be read: {out.strip().splitlines()[-1]}")
    assert r.returncode == 0, out
    would = next(line for line in out.splitlines() if line.startswith("Would install"))
    assert f" {runtime}-" in would and " h5py-" in would, would
