"""Installation: setup.py declares ranges, constraints/cpu.txt pins this project's CPU machines.

The point of the ranges is that ``pip install -e .`` on a user's CUDA machine keeps the torch
(and the triton its wheel requires) already there. The last two tests check that with pip
itself: a fresh venv holding a metadata-only stand-in for the CUDA torch 2.11.0 wheel (and the
triton 3.6.0 it requires), then ``pip install --dry-run --report`` of this checkout, resolving
every other dependency against the package registry. They skip only when the registry cannot
be reached; about 30 s together.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints" / "cpu.txt"
CPU_TORCH = "2.13.0+cpu"  # the local wheel of this project's CPU machines
CUDA_TORCH, CUDA_TRITON = "2.11.0", "3.6.0"  # the GPU machine's torch and the triton its wheel pins
PIP_TIMEOUT_S = 240


def declared() -> dict:
    """setup()'s keyword arguments, read by running setup.py with setuptools.setup replaced."""
    seen = {}
    real = setuptools.setup
    setuptools.setup = lambda **kwargs: seen.update(kwargs)
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real
        os.chdir(cwd)
    return seen


def requirements(*extras: str) -> dict[str, Requirement]:
    kwargs = declared()
    reqs = [Requirement(r) for r in kwargs["install_requires"]]
    for extra in extras:
        reqs += [Requirement(r) for r in kwargs["extras_require"][extra]]
    by_name: dict[str, Requirement] = {}
    for req in reqs:
        by_name.setdefault(canonicalize_name(req.name), req)
    return by_name


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def test_ranges_admit_the_cpu_and_the_cuda_machines():
    reqs = requirements()
    assert not [str(r) for r in reqs.values() if any(s.operator in ("==", "===") for s in r.specifier)], \
        "setup.py pins exact versions; pin in constraints/cpu.txt, declare ranges in setup.py"
    torch = reqs["torch"].specifier
    for version in (CPU_TORCH, CUDA_TORCH, "2.4.0"):
        assert torch.contains(version), f"torch {version} is outside setup.py's {torch}"
    assert not torch.contains("2.3.1"), "torch < 2.4 lacks torch.get_autocast_dtype(device_type)"
    assert reqs["deepspeed"].specifier.contains("0.19.8")
    assert not reqs["deepspeed"].specifier.contains("0.20.0"), "DeepSpeed's private ZeRO attributes: keep < 0.20"
    for extra in ("gpu", "dev"):
        triton = requirements(extra)["triton"].specifier
        for version in (CUDA_TRITON, "3.9.0"):
            assert triton.contains(version), f".[{extra}] refuses triton {version} ({triton})"


def test_constraints_pin_every_requirement_inside_its_range():
    locked = pins()
    reqs = requirements("dev")
    assert locked["torch"] == CPU_TORCH and locked["triton"] == "3.9.0"
    unpinned = sorted(set(reqs) - set(locked))
    assert not unpinned, f"constraints/cpu.txt does not pin {unpinned}"
    outside = [f"{n}=={locked[n]} vs {r}" for n, r in reqs.items() if not r.specifier.contains(locked[n], prereleases=True)]
    assert not outside, f"constraints/cpu.txt pins versions setup.py refuses: {outside}"
    assert "elmo-dist" not in locked and "pip" not in locked


def test_readme_and_ci_install_through_the_constraints():
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.splitlines()
                if line.startswith("python3 -m venv .venv && ") and "torch==2.13.0" in line]
    assert len(commands) == 2, commands
    for line in commands:
        assert "pip install -c constraints/cpu.txt torch==2.13.0 && pip install -c constraints/cpu.txt -e " in line
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines(), ".ci/run must run the README's test command verbatim"


def test_bench_without_the_dev_extra_says_what_to_install(monkeypatch, capsys):
    from elmo_dist.cli import bench
    monkeypatch.delenv("ELMO_DIST_DEBUG", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytest_benchmark" else real(name, *a))
    assert bench.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[dev]"' in err[0], err


# ----------------------------------------------------------------------------- pip itself
def _standin_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A wheel holding only metadata: to pip, an installed ``name`` ``version``."""
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: metadata-only stand-in\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{info}/METADATA": meta,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: elmo-dist tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    files[f"{info}/RECORD"] = "".join(f"{p},sha256={digest(t)},{len(t.encode())}\n" for p, t in files.items()) + \
        f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, t in files.items():
            z.writestr(p, t)
    return path


def _pip_env() -> dict[str, str]:
    """The environment minus what would bend a fresh venv's pip (a constraints file such as
    constraints/cpu.txt would force torch 2.13.0+cpu: that is what it is for)."""
    drop = {"PIP_CONSTRAINT", "PIP_REQUIREMENT", "PIP_NO_BUILD_ISOLATION", "PIP_USER", "PIP_UPGRADE",
            "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pip(python: Path, *args: str, timeout: float = PIP_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, env=_pip_env(),
                          timeout=timeout)


def _registry_unreachable(python: Path) -> str | None:
    """Why the registry cannot be used, or None when it answers (asked only after a failure)."""
    probe = _pip(python, "index", "versions", "deepspeed", "--timeout", "15", "--retries", "1", timeout=120)
    if probe.returncode == 0 and "deepspeed" in probe.stdout:
        return None
    tail = (probe.stdout + probe.stderr).strip().splitlines()[-1:] or ["no output"]
    return f"the package registry is unreachable (pip index versions deepspeed: {tail[0]})"


@pytest.fixture(scope="module")
def cuda_like_venv(tmp_path_factory):
    """A fresh venv that holds torch 2.11.0 and triton 3.6.0 as a CUDA machine does. The
    stand-in torch requires its triton exactly, as the CUDA wheel does (its other requirements,
    nvidia-* among them, are left out: the stand-ins are installed with --no-deps)."""
    root = tmp_path_factory.mktemp("cuda_like")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120, env=_pip_env())
    python = root / "venv" / "bin" / "python"
    wheels = [_standin_wheel(root, "torch", CUDA_TORCH, (f'triton=={CUDA_TRITON}; platform_system == "Linux"',)),
              _standin_wheel(root, "triton", CUDA_TRITON)]
    done = _pip(python, "install", "--no-deps", "--no-index", *map(str, wheels))
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def _dry_run(python: Path, target: str, report: Path) -> dict[str, str]:
    """What ``pip install -e target`` would install: {name: version}; skips if offline."""
    done = _pip(python, "install", "--dry-run", "--quiet", "--timeout", "30", "--report", str(report), "-e", target)
    if done.returncode != 0:
        why = _registry_unreachable(python)
        if why:
            pytest.skip(why)
        pytest.fail(f"pip install --dry-run -e {target} failed:\n{done.stdout}\n{done.stderr}")
    items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}


def _installed(python: Path) -> dict[str, str]:
    listed = json.loads(_pip(python, "list", "--format", "json").stdout)
    return {canonicalize_name(d["name"]): d["version"] for d in listed}


def test_pip_install_keeps_the_users_torch(cuda_like_venv, tmp_path):
    assert _installed(cuda_like_venv)["torch"] == CUDA_TORCH
    would = _dry_run(cuda_like_venv, str(REPO), tmp_path / "report.json")
    assert "elmo-dist" in would and "deepspeed" in would, f"pip resolved no dependencies: {would}"
    assert "torch" not in would, f"pip install -e . would replace torch {CUDA_TORCH} with {would['torch']}"
    assert "triton" not in would


def test_gpu_extra_keeps_the_triton_of_the_users_torch(cuda_like_venv, tmp_path):
    would = _dry_run(cuda_like_venv, f"{REPO}[gpu]", tmp_path / "report.json")
    assert "elmo-dist" in would, would
    assert "torch" not in would and "triton" not in would, \
        f"pip install -e .[gpu] would replace torch {CUDA_TORCH} / triton {CUDA_TRITON}: {would}"
