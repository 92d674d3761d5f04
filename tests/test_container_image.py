"""The container image, deploy/docker/Dockerfile.

There is no Docker engine in CI, so the image is checked in two ways: the Dockerfile's facts
(two stages on one base, non-root user, `spaceport` as entrypoint, a health check on /healthz
that really works, nothing but the venv carried into the final stage, a build context that
holds what the build copies), and its Python part replayed outside Docker: the build stage's
COPY steps fill a temporary folder (through .dockerignore) and its RUN steps run there with
the stage's ARG and ENV values, after which the installed `spaceport` must work.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


# --- a small Dockerfile reader -------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def args(self) -> dict[str, str]:
        """The stage's ARGs with their defaults (ARG NAME=default)."""
        out = {}
        for arg in self.all("ARG"):
            name, _, default = arg.partition("=")
            out[name] = default
        return out

    def env(self, variables: dict[str, str]) -> dict[str, str]:
        """The stage's ENV, with ${VAR} expanded from ``variables`` and earlier ENVs."""
        out: dict[str, str] = {}
        for env in self.all("ENV"):
            for pair in shlex.split(env):
                key, _, value = pair.partition("=")
                out[key] = expand(value, {**variables, **out})
        return out


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], ""), text)


def read_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages. Backslash continuations are joined and comment lines
    dropped (even inside a continuation), as Docker's parser does."""
    instructions = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=expand(parts[0], global_args), name=name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile():
    return read_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def stages(dockerfile):
    _, stages = dockerfile
    return stages


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """The stage's COPY instructions from the build context: (sources, destination)."""
    out = []
    for copy in stage.all("COPY"):
        parts = shlex.split(copy)
        if any(p.startswith("--from") for p in parts):
            continue
        *sources, destination = [p for p in parts if not p.startswith("--")]
        out.append((sources, destination))
    return out


# --- .dockerignore ------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(excluded?, pattern) in file order; the last matching pattern wins."""
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        out.append((not negated, pattern))
    return out


def ignored(relpath: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders; `**` spans
    any number of folders (fnmatch's `*` already crosses `/`, which covers it here)."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for excluded, pattern in patterns:
        simple = pattern.replace("**/", "*/") if pattern.startswith("**/") else pattern
        candidates = [simple] + ([simple[2:]] if simple.startswith("*/") else [])
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            verdict = excluded
    return verdict


def copy_context(sources: list[str], destination: str, workdir: Path, patterns) -> None:
    """COPY sources... destination, from the repository root through .dockerignore, with
    Docker's meaning: a folder's contents go into the destination; files go into it when it
    ends with "/" (or there are several), else become it."""
    dest = workdir / destination
    for source in sources:
        src = ROOT / source
        assert src.exists(), f"the Dockerfile copies {source}, which is not in the repository"
        assert not ignored(source, patterns), f".dockerignore leaves {source} out of the context"
        if src.is_file():
            target = dest / src.name if destination.endswith("/") or len(sources) > 1 else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            continue
        for path in src.rglob("*"):
            if path.is_file() and not ignored(path.relative_to(ROOT).as_posix(), patterns):
                out = dest / path.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)


# --- facts ----------------------------------------------------------------------------------


def test_two_stages_on_one_slim_base(dockerfile):
    global_args, stages = dockerfile
    assert len(stages) == 2, "a build stage and a final stage"
    build, final = stages
    assert build.name == "build"
    # the venv's bin/python is a symlink into the base image: both stages must share it
    assert build.base == final.base
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", final.base), final.base


def test_final_stage_carries_only_the_venv(stages):
    build, final = stages
    venv = final.args()["VENV"]
    assert venv == build.args()["VENV"]
    (copy,) = final.all("COPY")
    assert shlex.split(copy) == ["--from=build", "${VENV}", "${VENV}"]
    # nothing installed in the final stage: no package manager, no pip, no compiler
    for run in final.all("RUN"):
        assert not re.search(
            r"\b(apt-get|apt|apk|dnf|yum|pip|gcc|cc|make|build-essential)\b", run
        ), run


def test_runs_as_a_non_root_user(stages):
    _, final = stages
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid not in ("0", "root") and gid not in ("0", "root")
    # the uid the chart runs spaceport as by default (workUser), so files it writes match
    assert uid == "1000"
    assert "useradd --uid 1000" in " ".join(final.all("RUN"))


def test_entrypoint_is_spaceport(stages):
    _, final = stages
    assert json.loads(final.last("ENTRYPOINT")) == ["spaceport"]
    assert json.loads(final.last("CMD")) == ["run"]
    env = final.env(final.args())
    assert env["PATH"].split(":")[0] == final.args()["VENV"] + "/bin"


def healthcheck_argv(final: Stage) -> list[str]:
    check = final.last("HEALTHCHECK")
    _, _, command = check.partition("CMD")
    argv = json.loads(command)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def test_healthcheck_asks_healthz_on_the_listening_port(stages):
    _, final = stages
    env = final.env(final.args())
    port = env["SPACEPORT_LISTEN"].rpartition(":")[2]
    assert final.last("EXPOSE") == port
    assert "/healthz" in final.last("HEALTHCHECK")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        type(self).seen.append(self.path)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_command_really_checks(stages, status, healthy):
    """Run the HEALTHCHECK command against a stand-in daemon: healthy only on a 200."""
    _, final = stages
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    handler = type("Handler", (_Health,), {"status": status, "seen": []})
    server.RequestHandlerClass = handler
    if status is None:
        server.server_close()  # nothing listens on the port any more
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "SPACEPORT_LISTEN": f"0.0.0.0:{port}"}
        result = subprocess.run(healthcheck_argv(final), env=env, capture_output=True, timeout=30)
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()
    if status is not None:
        assert handler.seen == ["/healthz"]


def test_dockerignore_sends_only_what_the_build_needs(stages):
    patterns = dockerignore_patterns()
    build, _ = stages
    for sources, _ in copy_sources(build):
        for source in sources:
            assert not ignored(source, patterns), source
    for heavy in (
        ".git/HEAD",
        "tests/test_helm_chart.py",
        ".venv/bin/python",
        "benchmarks/out/x",
        "src/spaceport/__pycache__/cli.cpython-312.pyc",
        "deploy/helm/spaceport/values.yaml",
    ):
        assert ignored(heavy, patterns), heavy
    assert not ignored("src/spaceport/cli.py", patterns)


# --- the build stage, replayed ------------------------------------------------------------


def entry_point_module() -> str | None:
    if tomllib is None:
        return None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts["spaceport"].partition(":")[0]


def test_build_stage_installs_a_working_spaceport(stages, tmp_path):
    module = entry_point_module()
    source = ROOT / "src" / Path(*module.split(".")) if module else None
    if module and not (source.with_suffix(".py").exists() or (source / "__init__.py").exists()):
        pytest.skip(f"the entry point's module {module} is not in the source tree yet")
    build, _ = stages
    args = build.args()
    # Docker runs RUN with the stage's ARGs and ENVs in the environment, from WORKDIR.
    venv = tmp_path / "venv"
    variables = {**args, "VENV": str(venv)}
    env = build.env(variables)
    runs = build.all("RUN")
    assert runs and all(args["VENV"] not in run for run in runs), (
        "RUN steps must name the venv as $VENV so the replay can move it"
    )
    # WORKDIR becomes a temporary folder; COPY destinations relative to it follow it.
    assert build.all("WORKDIR"), "the build stage works in a WORKDIR"
    workdir = tmp_path / "context"
    workdir.mkdir()
    patterns = dockerignore_patterns()
    for sources, destination in copy_sources(build):
        assert not destination.startswith("/"), (
            f"COPY to {destination}: keep it relative to WORKDIR"
        )
        copy_context(sources, destination, workdir, patterns)

    # `python` in the RUN steps is the image's interpreter; here it is this one.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    run_env = {
        **os.environ,
        **variables,
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    run_env.pop("PYTHONPATH", None)
    for run in runs:
        result = subprocess.run(
            ["/bin/sh", "-c", run],
            cwd=workdir,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"RUN {run}\n{result.stdout}\n{result.stderr}"

    # What the final stage gets: the venv alone, run from elsewhere with a bare environment.
    shutil.rmtree(workdir)
    final_env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SPACEPORT_LISTEN": "0.0.0.0:8000",
    }
    result = subprocess.run(
        ["spaceport", "--help"],
        cwd=tmp_path,
        env=final_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import spaceport; print(spaceport.__file__)"],
        cwd=tmp_path,
        env=final_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    # and no installer came along
    assert not (venv / "bin" / "pip").exists()
    no_pip = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pip"],
        env=final_env,
        capture_output=True,
        timeout=60,
    )
    assert no_pip.returncode != 0
