"""A venv with real Scipion (from PyPI), built once and kept outside the repository.

About 700 MB and a few minutes to build, so it is cached: ``$SPACEPORT_SCIPION_VENV`` or
``/var/tmp/spaceport-scipion/venv``. A venv counts only once its marker file is written
(after the install and an import check), so a build that was killed is built again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys

PACKAGES = ["scipion-pyworkflow==3.11.7", "scipion-em==3.11.1"]
MARKER = "spaceport-scipion-ready"
DEFAULT = "/var/tmp/spaceport-scipion/venv"
BUILD_SECONDS = 1500


def venv_dir() -> str:
    return os.environ.get("SPACEPORT_SCIPION_VENV", DEFAULT)


def scipion_python() -> tuple[str | None, str]:
    """(the venv's python, "") or (None, why it cannot be had)."""
    venv = venv_dir()
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, MARKER)
    if _ready(marker):
        return python, ""
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        if _ready(marker):
            return python, ""
        shutil.rmtree(venv, ignore_errors=True)  # what a killed build left
        try:
            subprocess.run([sys.executable, "-m", "venv", venv], check=True,
                           capture_output=True, timeout=120)
            pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            out = subprocess.run(pip + PACKAGES, capture_output=True, text=True,
                                 timeout=BUILD_SECONDS)
            if out.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                return None, f"pip install {' '.join(PACKAGES)} failed: {out.stderr[-800:]}"
            check = subprocess.run([python, "-c", "import pyworkflow, pwem, mrcfile"],
                                   capture_output=True, text=True, timeout=300)
            if check.returncode != 0:
                return None, f"Scipion does not import: {check.stderr[-800:]}"
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"cannot build the Scipion venv in {venv}: {exc}"
        with open(marker, "w") as f:
            f.write("\n".join(PACKAGES) + "\n")
        return python, ""


def _ready(marker: str) -> bool:
    try:
        with open(marker) as f:
            return f.read().split() == PACKAGES
    except OSError:
        return False
