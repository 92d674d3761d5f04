"""The README's commands do what it says, from a fresh clone (issue 14)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_first_command_works_from_a_fresh_clone(tmp_path):
    """Clone what is committed, and run the README's first command as written (a new venv,
    pip install ., spaceport demo) at 80 columns: the demo passes and leaves nothing."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone, temp = tmp_path / "clone", tmp_path / "tmp"
    temp.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    first = sh_blocks()[0].strip()
    # Its own venv: the test command's .venv must not silently reuse the demo's.
    assert first.startswith("python3 -m venv .venv-demo && . .venv-demo/bin/activate")
    assert first.endswith("spaceport demo")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(COLUMNS="80", TMPDIR=str(temp),
               PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                    if ".venv" not in p))
    result = subprocess.run(["bash", "-c", first], cwd=clone, env=env, capture_output=True,
                            timeout=600)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    assert "identical" in out and "The whole story in" in out
    assert list(temp.iterdir()) == []


def test_the_second_command_is_the_one_ci_runs():
    """The README's test command is run as written by .ci/run on every CI run."""
    second = sh_blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    install_and_test = second.split("&& ", 2)[-1]  # after the venv is made and activated
    assert install_and_test in ci.replace(" -q ", " "), (install_and_test, ci)
    assert second.startswith("python3 -m venv .venv && . .venv/bin/activate")
    assert ".venv-demo" not in second  # two venvs, one a command


def test_the_readme_says_what_the_test_run_downloads_and_where():
    """~700 MB of Scipion under /var/tmp: the README names it and how to move it, and the
    folder and variable it names are the ones the tests use."""
    from scipion.env import DEFAULT

    text = (ROOT / "README.md").read_text()
    assert "700 MB" in text and DEFAULT in text and "SPACEPORT_SCIPION_VENV" in text
    assert "SPACEPORT_SCIPION_VENV" in (ROOT / "tests/scipion/env.py").read_text()


def test_shell_completion_as_the_readme_shows_it():
    text = (ROOT / "README.md").read_text()
    assert 'eval "$(_SPACEPORT_COMPLETE=bash_source spaceport)"' in text
    script = run_cli(env={"_SPACEPORT_COMPLETE": "bash_source"})
    assert script.code == 0 and "_spaceport_completion" in script.out
    words = run_cli(env={"_SPACEPORT_COMPLETE": "bash_complete", "COMP_WORDS": "spaceport de",
                         "COMP_CWORD": "1"})
    assert "deploy" in words.out and "demo" in words.out
    options = run_cli(env={"_SPACEPORT_COMPLETE": "bash_complete",
                           "COMP_WORDS": "spaceport deploy --dis", "COMP_CWORD": "2"})
    assert "--discard-local" in options.out


def test_every_command_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    for command in ("deploy", "save", "undeploy", "status", "verify", "unlock", "clone",
                    "trash", "run", "wait", "demo"):
        assert f"spaceport {command}" in text, command
