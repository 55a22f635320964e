"""A Binder build, simulated: a fresh environment with exactly what binder/ declares runs the
first notebooks. It fails when binder/ stops installing something the notebooks import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def offline_requirements(text: str) -> list[str]:
    """binder/requirements.txt as this offline machine can install it.

    The CPU build of torch comes from PyTorch's own index on Binder; here the same version comes
    from the package registry this machine reaches (it is a CPU build on this machine kind), so
    `torch==X+cpu` becomes `torch==X` and the extra index line is dropped. Everything else is
    kept exactly as written.
    """
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("--extra-index-url", "--index-url")):
            continue
        out.append(re.sub(r"^torch==([\w.]+)\+cpu$", r"torch==\1", stripped))
    return out


def test_the_torch_line_is_mapped_and_nothing_else_changes():
    text = "--extra-index-url https://example.invalid/cpu\ntorch==2.13.0+cpu\n-e .\nnumpy<3\n"
    assert offline_requirements(text) == ["torch==2.13.0", "-e .", "numpy<3"]


def test_runtime_matches_the_python_we_test_with():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime), runtime
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.slow
def test_a_fresh_binder_environment_runs_notebooks_00_and_01(tmp_path):
    venv = tmp_path / "binder-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(offline_requirements((BINDER / "requirements.txt")
                                                           .read_text())) + "\n")  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # From the repository root, as repo2docker runs pip.
        return subprocess.run([python, *args], cwd=ROOT, capture_output=True, text=True)

    installed = run("-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(requirements))  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # Binder starts JupyterLab: the environment must have it without any extra.
    lab = run("-m", "jupyter", "lab", "--version")
    assert lab.returncode == 0, lab.stderr[-2000:]
    # The test tools are not part of Binder's environment; add them to run the notebooks.
    tools = run("-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest", "nbval")
    assert tools.returncode == 0, tools.stderr[-3000:]
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "notebooks/00_welcome.ipynb", "notebooks/02_tokenization.ipynb")  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:]
    assert re.search(r"\d+ passed", result.stdout)
