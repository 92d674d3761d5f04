"""Runs a real Scipion project without a GUI (run with the Scipion venv's python).

    driver.py make-data SOURCE N [SIZE]   N small MRC volumes and micrographs (SIZE² pixels,
                                          256 by default) in SOURCE
    driver.py run WORK NAME SOURCE N      create WORK/NAME and run N rounds of protocols:
                                          import a volume (copyFiles=False: links into
                                          SOURCE), crop/resize it (ProtCropResizeVols),
                                          import micrographs (a set), and every third
                                          round delete an earlier crop run
    driver.py cleantmp WORK NAME SOURCE FILES GATE
                                          create WORK/NAME; import a volume and crop it;
                                          fill the crop run's tmp/ with FILES scratch
                                          files (as a long run leaves them), wait for the
                                          file GATE, then Scipion's own cleanTmp of that
                                          run deletes them; then one more round of runs
    driver.py stream WORK NAME FOLDER REPORT
                                          create WORK/NAME and run one streaming import of
                                          micrographs (dataStreaming, mic_*.mrc in FOLDER,
                                          linked), polling its output set every second;
                                          write its status, the set's size over time and
                                          every item's file (JSON) to REPORT
    driver.py check REPORT [--items] PROJECT...
                                          load each project with pyworkflow; write what
                                          was found (JSON) to REPORT; --items: every
                                          item's file must be there too (a deployed copy,
                                          its links restored)

The environment (SCIPION_HOME, SCIPION_USER_DATA, ...) is set by the caller, before
pyworkflow is imported.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import sys
import traceback


def make_data(source: str, n: int, mic_size: int = 256) -> None:
    import mrcfile
    import numpy as np
    os.makedirs(os.path.join(source, "vols"), exist_ok=True)
    os.makedirs(os.path.join(source, "mics"), exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(n):
        with mrcfile.new(os.path.join(source, "vols", f"vol_{i:03d}.mrc"), overwrite=True) as m:
            m.set_data(rng.random((32, 32, 32), dtype=np.float32))
            m.voxel_size = 2.0
        with mrcfile.new(os.path.join(source, "mics", f"mic_{i:03d}.mrc"), overwrite=True) as m:
            m.set_data(rng.random((mic_size, mic_size), dtype=np.float32))


def _host_config() -> None:
    from pyworkflow.protocol import HostConfig
    hosts = os.path.join(os.environ["SCIPION_HOME"], "config", "hosts.conf")
    if not os.path.exists(hosts):
        os.makedirs(os.path.dirname(hosts), exist_ok=True)
        HostConfig.writeBasic(hosts)


def _new_project(work: str, name: str):
    """A new Scipion project in ``work``, with the current folder in it (pyworkflow names
    its files relative to the project)."""
    _host_config()
    from pyworkflow.project import Manager
    manager = Manager()
    os.makedirs(manager.PROJECTS, exist_ok=True)
    project = manager.createProject(name, location=work)
    os.chdir(project.getPath())
    return project


def _import_and_crop(project, source: str, i: int):
    """Import volume ``i`` (linked, not copied) and crop it: the two runs, finished."""
    from pwem.protocols import ProtCropResizeVols, ProtImportVolumes
    imp = project.newProtocol(ProtImportVolumes, objLabel=f"import vol {i}",
                              importFrom=ProtImportVolumes.IMPORT_FROM_FILES,
                              filesPath=os.path.join(source, "vols"),
                              filesPattern=f"vol_{i:03d}.mrc", samplingRate=2.0,
                              copyFiles=False)
    project.launchProtocol(imp, wait=True)
    crop = project.newProtocol(ProtCropResizeVols, objLabel=f"crop {i}", doResize=True,
                               resizeOption=ProtCropResizeVols.RESIZE_DIMENSIONS,
                               resizeDim=24)
    crop.inVolume.set(imp)
    crop.inVolume.setExtended("outputVolume")
    project.launchProtocol(crop, wait=True)
    return imp, crop


def run(work: str, name: str, source: str, n: int) -> None:
    from pwem.protocols import ProtImportMicrographs
    project = _new_project(work, name)
    crops = []
    for i in range(n):
        imp, crop = _import_and_crop(project, source, i)
        crops.append(crop)
        mics = project.newProtocol(ProtImportMicrographs, objLabel=f"import mics {i}",
                                   importFrom=ProtImportMicrographs.IMPORT_FROM_FILES,
                                   filesPath=os.path.join(source, "mics"),
                                   filesPattern="mic_*.mrc", samplingRate=1.0,
                                   copyFiles=False)
        project.launchProtocol(mics, wait=True)
        if i % 3 == 2:
            project.deleteProtocol(crops.pop(0))
        print(f"round {i}: {[p.getStatus() for p in (imp, crop, mics)]}", flush=True)


def clean_tmp(work: str, name: str, source: str, files: int, gate: str) -> None:
    import time
    project = _new_project(work, name)

    def one_round(i: int):
        imp, crop = _import_and_crop(project, source, i)
        print(f"round {i}: {imp.getStatus()} {crop.getStatus()} {crop.getWorkingDir()}",
              flush=True)
        return crop

    crop = one_round(0)
    tmp = crop._getTmpPath()
    os.makedirs(tmp, exist_ok=True)
    for i in range(files):
        with open(os.path.join(tmp, f"particle_{i:06d}.mrc"), "wb") as f:
            f.write(b"scratch %d" % i)
    print(f"filled {tmp} with {files} files", flush=True)
    end = time.monotonic() + 900
    while not os.path.exists(gate):
        if time.monotonic() > end:
            sys.exit("the gate never opened")
        time.sleep(0.2)
    crop.cleanTmp()  # Scipion's own: what it does when a run ends
    print(f"cleanTmp done: {tmp} holds {len(os.listdir(tmp)) if os.path.isdir(tmp) else 0}",
          flush=True)
    later = one_round(1)
    print(f"later run {later.getWorkingDir()}", flush=True)


def stream(work: str, name: str, folder: str, report: str) -> None:
    """A streaming import as a scientist starts one on data still arriving: it takes each
    file whose mtime is older than fileTimeout, and ends after ``timeout`` without one."""
    import threading
    import time
    from pwem.protocols import ProtImportMicrographs
    project = _new_project(work, name)
    prot = project.newProtocol(ProtImportMicrographs, objLabel="streaming import",
                               importFrom=ProtImportMicrographs.IMPORT_FROM_FILES,
                               filesPath=folder, filesPattern="mic_*.mrc", samplingRate=1.0,
                               copyFiles=False, dataStreaming=True, timeout="25s",
                               fileTimeout="1s")
    runner = threading.Thread(target=project.launchProtocol, args=(prot,),
                              kwargs={"wait": True})
    started = time.time()
    runner.start()
    sizes = []
    while runner.is_alive():
        time.sleep(1)
        sets = glob.glob(os.path.join(project.getPath(), "Runs", "*", "micrographs.sqlite"))
        try:
            n = sqlite3.connect(f"file:{sets[0]}?mode=ro", uri=True).execute(
                "SELECT COUNT(*) FROM Objects").fetchone()[0] if sets else 0
        except sqlite3.Error:
            n = sizes[-1][1] if sizes else 0  # written at this moment: the next look sees it
        sizes.append((round(time.time() - started, 1), n))
    from pyworkflow.project import Project
    import pyworkflow as pw
    again = Project(pw.Config.getDomain(), project.getPath())
    again.load()
    done = again.getProtocol(prot.getObjId())
    items = [os.path.realpath(os.path.join(project.getPath(), m.getFileName()))
             for m in done.outputMicrographs.iterItems()]
    with open(report, "w") as f:
        json.dump({"status": done.getStatus(), "sizes": sizes, "items": items}, f, indent=1)


def check(report: str, paths: list[str], items: bool) -> None:
    """For each project: databases intact, it loads, each run's status, each finished run's
    outputs resolve (set files there, sizes as recorded, item files present)."""
    _host_config()
    import pyworkflow as pw
    from pyworkflow.project import Project
    results = []
    for path in paths:
        found = {"path": path, "errors": [], "runs": {}}
        for db in glob.glob(os.path.join(path, "**", "*.sqlite"), recursive=True) + \
                glob.glob(os.path.join(path, "**", "*.db"), recursive=True):
            try:
                ok = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
                    "PRAGMA integrity_check").fetchone()[0]
            except sqlite3.Error as exc:
                ok = str(exc)
            if ok != "ok":
                found["errors"].append(f"{os.path.relpath(db, path)}: {ok}")
        try:
            os.chdir(path)  # pyworkflow names its files relative to the project
            project = Project(pw.Config.getDomain(), path)
            project.load()
            for prot in project.getRuns():
                run = {"status": prot.getStatus(), "outputs": {}}
                folder = os.path.join(path, prot.getWorkingDir())
                if not os.path.isdir(folder):
                    found["errors"].append(f"{prot.getRunName()}: no folder {folder}")
                for attr_name, output in prot.iterOutputAttributes():
                    run["outputs"][attr_name] = _check_output(
                        path, output, found["errors"], prot.getRunName(), items)
                found["runs"][prot.getWorkingDir()] = run
        except Exception:  # noqa: BLE001 - reported, the caller asserts on it
            found["errors"].append("load failed: " + traceback.format_exc())
        results.append(found)
    with open(report, "w") as f:
        json.dump(results, f, indent=1)


def _check_output(root: str, output, errors: list, run: str, check_items: bool) -> dict:
    def exists(name: str) -> bool:
        full = name if os.path.isabs(name) else os.path.join(root, name)
        return os.path.exists(full)  # follows the links, as Scipion does

    info = {"class": type(output).__name__}
    if hasattr(output, "getSize") and hasattr(output, "iterItems"):  # a set
        set_file = output.getFileName()
        info["file"] = set_file
        if not exists(set_file):
            errors.append(f"{run}: output set file {set_file} is missing")
            return info
        items = list(output.iterItems())
        info["size"], info["items"] = output.getSize(), len(items)
        if len(items) != output.getSize():
            errors.append(f"{run}: {set_file} holds {len(items)} items, "
                          f"{output.getSize()} recorded")
        names = [item.getFileName() for item in items]
    else:
        names = [output.getFileName()] if hasattr(output, "getFileName") else []
    info["files"] = len(names)
    for name in names if check_items else []:
        if name and not exists(name):
            errors.append(f"{run}: output file {name} is missing")
    return info


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-data":
        make_data(args[0], int(args[1]), *(int(a) for a in args[2:3]))
    elif cmd == "run":
        run(args[0], args[1], args[2], int(args[3]))
    elif cmd == "cleantmp":
        clean_tmp(args[0], args[1], args[2], int(args[3]), args[4])
    elif cmd == "stream":
        stream(args[0], args[1], args[2], args[3])
    elif cmd == "check":
        check(args[0], [a for a in args[1:] if a != "--items"], "--items" in args)
    else:
        sys.exit(f"unknown command {cmd}")
