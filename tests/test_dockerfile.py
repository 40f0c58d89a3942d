"""Cheap static checks of the Dockerfile, .dockerignore and the CI image stage.

The image itself is built and run by .ci/image (buildah); these only catch edits that would break
it or drop a promise of the issue (slim public base, non-root user, `batchemo` entrypoint, the
package and its default model from the checkout, Ray's --shm-size advice).
"""

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_base_is_an_arg_defaulting_to_python_slim():
    ins = _instructions()
    assert ins[0] == ("ARG", "BASE=python:3.11-slim")
    froms = [a for i, a in ins if i == "FROM"]
    assert froms and all(a.split()[0] == "${BASE}" for a in froms)
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert py.startswith(">=3.11"), "the default base (python:3.11-slim) must satisfy it"


def test_runs_as_non_root_with_batchemo_entrypoint():
    ins = _instructions()
    users = [a for i, a in ins if i == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("0", "root")
    assert [a for i, a in ins if i == "ENTRYPOINT"][-1] == '["batchemo"]'
    assert [a for i, a in ins if i == "CMD"][-1] == '["--help"]'
    env = " ".join(a for i, a in ins if i == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "/opt/venv/bin" in env


def test_installs_the_package_from_the_checkout():
    ins = _instructions()
    copies = " ".join(a for i, a in ins if i == "COPY")
    for needed in ("pyproject.toml", "README.md", "batchemo"):
        assert needed in copies
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert re.search(r"pip install [^&]*--no-deps \.", runs)
    assert "--no-cache-dir" in runs


def test_ray_shm_size_advice_and_extras_exist():
    text = DOCKERFILE.read_text()
    assert "--shm-size" in text and "/dev/shm" in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "ray" in extras, "the Dockerfile documents --build-arg EXTRAS=ray"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins (prefix '!' re-includes); a pattern that
    matches a parent folder matches the path. Enough of it for the patterns used here."""
    ignored = False
    parts = path.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatch(seg, p[3:]) for seg in parts)
        else:
            hit = any(fnmatch.fnmatch(c, p) and c.count("/") == p.count("/") for c in candidates)
        if hit:
            ignored = not neg
    return ignored


def test_dockerignore_keeps_what_pip_install_reads():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    for kept in ("pyproject.toml", "README.md", "batchemo/__init__.py", "batchemo/cli.py",
                 "batchemo/models/fer2013-default.keras", "batchemo/models/fer2013-default.json",
                 "batchemo/models/detectors/face_detection_short_range.tflite"):
        assert not _ignored(kept, patterns), kept
    for dropped in (".git/config", ".venv/bin/python", "tests/test_cli.py",
                    "batchemo/__pycache__/cli.cpython-311.pyc"):
        assert _ignored(dropped, patterns), dropped


def test_ci_image_stage_is_an_executable_bash_script():
    script = ROOT / ".ci" / "image"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--failure-threshold warning" in text
    assert "--isolation chroot" in text


@pytest.mark.parametrize("extras", ["", "ray"])
def test_requirements_snippet_reads_pyproject(extras, tmp_path):
    """The RUN line that lists dependencies from pyproject.toml (before the code is copied)."""
    run = next(a for i, a in _instructions() if i == "RUN" and "tomllib" in a)
    code = re.search(r'python -c "(.*?)" ', run).group(1)
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    out = subprocess.run([sys.executable, "-c", code, extras], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.split("\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = project["dependencies"] + (project["optional-dependencies"][extras] if extras else [])
    assert [ln for ln in out if ln] == want
