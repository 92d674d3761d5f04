"""``trash restore --bwlimit``: the copy from the primary's trash into the working copy is held
to the rate, with the meaning it has on deploy and save (measured as in
test_everyday.py::test_bwlimit_holds_the_rate_of_a_deploy_and_a_save)."""

from __future__ import annotations

import os
import time

from conftest import run_cli, write

from spaceport.safety.lock import DEFAULT_STATUS_DIR


def test_trash_restore_holds_the_bwlimit(tmp_path):
    """Bytes over time, measured: never faster than the limit (the process's start-up only
    lowers the rate), not far below it; the same restore without a limit is the negative
    control."""
    limit = 1 << 20  # "1M": 1 MiB/s
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    for i in range(6):
        write(primary, f"keep/f{i}.txt", b"k")
    data = os.urandom(3 << 20)  # 3 MiB
    write(primary, "Runs/001/extra/big.mrc", data)
    assert run_cli("deploy", primary, work).code == 0
    big = os.path.join(work, "Runs/001/extra/big.mrc")
    os.unlink(big)
    r = run_cli("save", work)
    assert r.code == 0 and "moved to the trash" in r.out, (r.out, r.err)
    [batch] = os.listdir(os.path.join(primary, DEFAULT_STATUS_DIR, "trash"))

    start = time.monotonic()
    r = run_cli("trash", "restore", work, batch, "--bwlimit", "1M")
    took = time.monotonic() - start
    assert r.code == 0, r.err
    assert "restored 1 file" in r.out, r.out
    with open(big, "rb") as f:
        assert f.read() == data
    rate = len(data) / took
    print(f"trash restore --bwlimit 1M: {len(data)} bytes in {took:.2f} s = "
          f"{rate / (1 << 20):.2f} MiB/s")
    assert rate <= limit * 1.05
    assert rate >= limit * 0.4

    os.unlink(big)  # never saved since: the same restore again, without a limit
    start = time.monotonic()
    r = run_cli("trash", "restore", work, batch)
    took_free = time.monotonic() - start
    assert r.code == 0, r.err
    with open(big, "rb") as f:
        assert f.read() == data
    assert took_free < took / 2, (took_free, took)
