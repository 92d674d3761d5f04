"""The model of the lock protocol (docs/lock-model) checks out: spin finds no error in the
corrected format 2, and a counterexample in each protocol known to be wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MODEL_DIR = Path(__file__).resolve().parents[1] / "docs" / "lock-model"
CHECK = MODEL_DIR / "check.sh"


def require_tools() -> None:
    for tool in ("spin", "gcc", os.environ.get("CC", "cc")):  # spin preprocesses with gcc
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (Debian: apt-get install spin gcc)")


def run_check(*names: str, model: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if model is not None:
        env["LOCK_MODEL"] = str(model)
    return subprocess.run(["bash", str(CHECK), *names], capture_output=True, text=True,
                          env=env, timeout=600)


def test_check_sh_proves_the_corrected_protocol_and_refutes_the_others():
    require_tools()
    res = run_check()
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    corrected = out.split("== format2-corrected:")[1].split("\n== ")[0]
    assert "errors: 0 " in corrected and "ok: holds in every reachable state" in corrected
    assert out.count("ok: counterexample, as expected") == 5
    # The counterexamples are the ones the README explains.
    assert "gives D2's record back -> lock" in out.split("== format2-as-specified:")[1]
    assert "assert((since<=2))" in out.split("== format1-commit-count:")[1]
    assert "all as expected" in out


def test_check_sh_fails_when_the_corrected_protocol_is_broken(tmp_path):
    """check.sh is no rubber stamp: give the corrected variant its give-back back, and the
    check that expects no error finds one and fails."""
    require_tools()
    text = (MODEL_DIR / "lock.pml").read_text()
    broken = text.replace("#define NO_RELEASE_GIVEBACK\n#define NO_STALE_GIVEBACK\n", "")
    assert broken != text
    (tmp_path / "lock.pml").write_text(broken)
    res = run_check("format2-corrected", model=tmp_path / "lock.pml")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED: expected no error" in res.stdout and "NOT as expected" in res.stdout


def test_check_sh_refuses_an_unknown_check():
    require_tools()
    res = run_check("format3")
    assert res.returncode == 2 and "no check named format3" in res.stderr
