"""A quick start (issue 22): ``import spaceport.cli`` imports only what every command needs.

A save with nothing to do once spent a third of a second importing what it never used: the
daemon, its HTTP client, the demo, rich's live widgets. Each command's module is imported
when that command runs (``spaceport.cli.LazyGroup``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
HEAVY = ("spaceport.daemon", "spaceport.cli.demo_cmd", "spaceport.cli.daemon_cmd",
         "spaceport.commands.deploy", "rich.progress", "rich.live", "http.client",
         "urllib.request", "http.server")


def modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter after running ``code``."""
    probe = f"import sys; {code}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": SRC})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_importing_the_command_line_loads_no_daemon_demo_or_live_widgets():
    assert heavy(modules_after("import spaceport.cli")) == []


def test_a_save_with_nothing_to_do_loads_no_daemon_demo_or_live_widgets(tmp_path):
    """What a real ``spaceport save`` of a deployed copy imports: the save, nothing else."""
    primary, work = tmp_path / "primary", tmp_path / "work"
    primary.mkdir()
    (primary / "a.txt").write_text("a")
    assert subprocess.run([sys.executable, "-m", "spaceport", "deploy", str(primary),
                           str(work)], env={**os.environ, "PYTHONPATH": SRC},
                          capture_output=True).returncode == 0
    loaded = modules_after(f"from spaceport.cli import main; main(['save', {str(work)!r}])")
    assert "spaceport.commands.save.flow" in loaded
    assert heavy(loaded) == []


def test_the_check_sees_what_a_command_imports():
    """The negative control: asking for ``run`` loads the daemon, and the check says so."""
    loaded = modules_after("import spaceport.cli as c, click; "
                           "c.cli.get_command(click.Context(c.cli), 'run')")
    assert "spaceport.cli.daemon_cmd" in heavy(loaded)
