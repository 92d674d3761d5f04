"""``spaceport demo``: the whole story on a generated Scipion-like project, locally.

A folder stands in for the OneData space. The demo deploys it, works on the copy as Scipion
would (new runs, links to micrographs, edits, deletions), saves, shows that a second
deployment is refused, undeploys, deploys again somewhere else and verifies that everything
— odd names and links included — came back byte for byte.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time

import click
from rich.markup import escape
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from ..commands.deploy import deploy
from ..commands.save import save
from ..commands.status import format_status, verify, work_status
from ..commands.undeploy import undeploy
from ..errors import LockedError, UsageError
from ..wording import count, human_size
from .options import env_option, err, make_options, out

ODD_NAMES = ["name with spaces.txt", 'quote"d.txt', "tab\there.txt", "new\nline.txt",
             "back\\slash.txt", " leading space.txt", "ünïcödé.txt",
             os.fsdecode(b"latin1-caf\xe9.txt")]


def generate_project(root: str, *, micrographs: int = 4, micrograph_mb: float = 1.0,
                     seed: int = 7) -> dict:
    """A small Scipion-like project: runs with logs and metadata, micrographs, odd names."""
    rng = random.Random(seed)
    count = {"files": 0, "bytes": 0}

    def write(rel: str, data: bytes) -> None:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        count["files"] += 1
        count["bytes"] += len(data)

    write("project.sqlite", rng.randbytes(64 * 1024))
    write("settings.sqlite", rng.randbytes(8 * 1024))
    runs = ["000002_ProtImportMovies", "000041_ProtMotionCorr", "000098_ProtCTFFind"]
    for number, run in enumerate(runs):
        write(f"Runs/{run}/logs/run.log", f"run {run} started\n".encode() * 40)
        write(f"Runs/{run}/logs/run.stdout", b"ok\n" * 100)
        write(f"Runs/{run}/run.db", rng.randbytes(16 * 1024))
        for i in range(12):
            write(f"Runs/{run}/extra/mic_{i:04d}_metadata.xmd",
                  f"data_\nloop_\n_rlnMicrographName mic_{i:04d}.mrc\n".encode())
    size = int(micrograph_mb * 1024 * 1024)
    for i in range(micrographs):
        write(f"Runs/{runs[0]}/extra/micrographs/mic_{i:04d}.mrc", rng.randbytes(size))
    for name in ODD_NAMES:
        write(f"odd names/{name}", name.encode("utf-8", "surrogateescape"))
    os.makedirs(os.path.join(root, "Tmp"), exist_ok=True)  # an empty folder must survive
    return count


def scipion_works(work: str) -> None:
    """What an application does to a project: new runs, links, edits, a deletion."""
    run = os.path.join(work, "Runs", "000120_ProtGctf")
    os.makedirs(os.path.join(run, "extra"), exist_ok=True)
    mics = "Runs/000002_ProtImportMovies/extra/micrographs"
    # Scipion links its inputs instead of copying them: relative and absolute links.
    os.symlink(f"../../../{mics}/mic_0000.mrc", os.path.join(run, "extra", "input_rel.mrc"))
    os.symlink(os.path.join(work, mics, "mic_0001.mrc"), os.path.join(run, "extra", "input_abs.mrc"))
    os.symlink("/usr/share/doc", os.path.join(run, "outside_link"))
    with open(os.path.join(run, "logs.txt"), "w") as f:
        f.write("gctf finished\n")
    with open(os.path.join(work, "project.sqlite"), "ab") as f:
        f.write(b"new protocol row")
    os.unlink(os.path.join(work, "Runs", "000098_ProtCTFFind", "run.db"))


DEMO_FOLDERS = ("onedata-space", "node-a", "node-b")


@click.command()
@env_option("--dir", "folder", type=click.Path(file_okay=False),
            help="Where to create the demo (default: a new temporary folder).")
@env_option("--keep", is_flag=True,
            help="Keep the demo's folders afterwards, to look around (default: remove them).")
@env_option("--micrograph-mb", type=click.FloatRange(0.01, 512), default=1.0,
            show_default=True, help="Size of each generated micrograph.")
@click.pass_context
def demo(ctx, folder, keep, micrograph_mb):
    """Run the whole story on a generated sample project, locally. It takes a second or
    two (longer with a bigger --micrograph-mb).

    A folder plays the OneData space. The demo deploys it, works on the working copy like
    Scipion, saves, shows a second deployment being refused, undeploys, deploys again
    elsewhere and verifies that every file, odd name and link came back. Then it removes
    what it made, unless --keep.
    """
    made_root = folder is None or not os.path.exists(folder)
    folder = os.path.abspath(folder or tempfile.mkdtemp(prefix="spaceport-demo-"))
    taken = [name for name in DEMO_FOLDERS if os.path.lexists(os.path.join(folder, name))]
    if taken:
        raise UsageError(f"{folder} already holds {', '.join(taken)}: the demo creates those "
                         "folders and removes them afterwards, so it does not use a folder "
                         "that has them.", hint="Nothing was changed. Give another --dir.")
    opts = make_options({**ctx.params, "progress": True, "jobs": 8})
    started = time.monotonic()
    try:
        checked, primary = _story(folder, opts, micrograph_mb)
    except BaseException:
        if not keep:
            _remove(folder, made_root)
            err.print("The demo's folders were removed; run it with --keep to look at them.")
        raise
    finally:
        opts.tracker.close()
    seconds = time.monotonic() - started
    if keep:
        text = (f"The whole story in {seconds:.1f} s. The folders are kept in {folder}: the "
                f"'OneData space' {primary}, and node B's working copy (undeployed, kept). "
                "Look at the space with the command below.")
    else:
        _remove(folder, made_root)
        text = (f"The whole story in {seconds:.1f} s. The demo's folders were removed; run "
                "'spaceport demo --keep' to keep them and look around.")
    # Wrapped to the terminal (the console itself does not wrap: soft_wrap), and the one
    # command to try is outside the box, on a line of its own, so it can be copied.
    out.print(Panel(Text(text, overflow="fold"), title="spaceport demo", expand=False),
              soft_wrap=False)
    if keep:
        out.print(f"spaceport status --primary {primary}", markup=False)
    if not checked.ok:
        raise SystemExit(1)
    err.print()


def _remove(folder: str, whole: bool) -> None:
    """What the demo made: its three folders, and ``folder`` if it made it."""
    if whole:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in DEMO_FOLDERS:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _story(folder: str, opts, micrograph_mb: float):
    primary = os.path.join(folder, "onedata-space", "my-project")
    work1, work2 = os.path.join(folder, "node-a", "project"), os.path.join(folder, "node-b", "project")
    os.makedirs(primary, exist_ok=True)

    def step(title: str) -> None:
        out.print(Rule(f"[bold cyan]{title}"))

    step("1. A project on primary storage")
    made = generate_project(primary, micrograph_mb=micrograph_mb)
    out.print(f"generated {made['files']} files ({human_size(made['bytes'])}) in {primary}"
              "\n(runs with logs and metadata, micrographs, names with quotes, tabs, newlines, "
              "non-UTF-8 bytes, an empty folder)", markup=False)

    step("2. Deploy it onto node A's fast local disk")
    report = deploy(primary, work1, opts)
    out.print(f"deployed {count(report.files, 'file')}; lock written to "
              f"{os.path.join(primary, opts.status_dir, 'lock')}", markup=False)

    step("3. Scipion works on the copy")
    scipion_works(work1)
    out.print("new run with relative, absolute and outside links; project.sqlite edited; "
              "a run.db deleted")
    out.print(format_status(work_status(work1, opts)), markup=False)

    step("4. Save: only what changed goes to the primary")
    saved = save(work1, opts)
    out.print(f"uploaded {count(saved.uploaded, 'file')}, moved {count(saved.deleted, 'file')} "
              f"to the trash (batch {saved.trash_batch}), wrote the link manifest with "
              f"{count(saved.links, 'link')} (OneData cannot hold links)", markup=False)

    step("5. A second deployment of the same project is refused")
    try:
        deploy(primary, work2, opts)
        raise AssertionError("the second deployment was not refused")
    except LockedError as exc:
        out.print(f"[green]refused as it should be[/] (exit code {exc.exit_code}):")
        out.print(exc.message, markup=False)

    step("6. Undeploy node A: final save, unlock, clean")
    undeploy(work1, opts)
    gone = not os.path.exists(os.path.join(work1, "project.sqlite"))
    out.print("node A's working copy is " + ("removed; its folder keeps only .spaceport/, the "
                                           "record of the undeploy" if gone else "still there"))

    step("7. Deploy on node B, at another path")
    report = deploy(primary, work2, opts)
    target = os.readlink(os.path.join(work2, "Runs", "000120_ProtGctf", "extra", "input_abs.mrc"))
    out.print(f"{count(report.links, 'link')} re-created from links.jsonl; the absolute link "
              f"now points into node B:\n  {target}", markup=False)

    step("8. Verify node B's copy against the primary, byte for byte")
    checked = verify(work2, opts, checksum=True)
    out.print(f"{count(checked.checked_files, 'file')} and {count(checked.checked_links, 'link')} "
              "checked: " + ("[green]identical[/]" if checked.ok
                             else f"[red]{escape(' / '.join(checked.differences))}[/]"))
    undeploy(work2, opts, keep_work=True)
    return checked, primary
