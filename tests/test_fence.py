"""Fencing: once the lock is another deployment's, each worker commits at most once more.

Randomised: many rounds, random stalls inside verifications and commits, the loss at a
random moment. The first test drives the Fence alone against an exact model (the owner and
every commit are recorded under one mutex); the second drives a real save() and takes the
lock over from another thread, counting from the primary's side what landed afterwards.
"""

import os
import random
import re
import threading
import time

import pytest
from conftest import write

from spaceport.commands.options import Options
from spaceport.errors import LockLostError
from spaceport.safety.fence import Fence
from spaceport.safety.lock import DEFAULT_STATUS_DIR, DeploymentLock, WorkCopy, force_unlock
from spaceport.store import PRIMARY_CAPABILITIES, PosixStore
from spaceport.store.retry import RetryPolicy

ROUNDS = int(os.environ.get("SPACEPORT_FENCE_ROUNDS", "150"))


class Lost(Exception):
    pass


def one_round(seed: int, workers: int) -> tuple[list[int], list[str]]:
    rnd = random.Random(seed)
    mu = threading.Lock()
    state = {"owner": "A"}
    after_loss = [0] * workers

    def verify():
        time.sleep(rnd.random() * 0.002)
        with mu:
            owner = state["owner"]
        time.sleep(rnd.random() * 0.002)
        if owner != "A":
            raise Lost("lost")

    fence = Fence(verify, max_age=rnd.choice([0.001, 0.01, 1.0]))

    def worker(i):
        try:
            for n in range(10_000):
                fence.before_commit()
                time.sleep(rnd.random() * 0.001)  # between the gate and the rename
                with mu:
                    if state["owner"] != "A":
                        after_loss[i] += 1
                fence.committed(f"w{i}-{n}")
        except Lost:
            return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    time.sleep(rnd.random() * 0.05)
    with mu:
        state["owner"] = "B"
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    return after_loss, fence.after_loss


def test_fence_bounds_commits_after_a_loss_to_one_per_worker():
    worst = 0
    for seed in range(ROUNDS):
        workers = 1 + seed % 6
        after_loss, reported = one_round(seed, workers)
        assert all(n <= 1 for n in after_loss), (seed, after_loss)
        # Everything that landed after the loss is among what the fence reports.
        assert len(reported) >= sum(after_loss)
        worst = max(worst, sum(after_loss))
    print(f"{ROUNDS} rounds; at most {worst} commit(s) after a loss in one round")


def test_verifications_are_shared_between_workers():
    calls = []
    fence = Fence(lambda: (calls.append(1), time.sleep(0.01)), max_age=10)
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for n in range(5):
            fence.before_commit()
            fence.committed("x")
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 40 commits; each worker needs a fresh verification per commit, but they share them.
    assert len(calls) < 40


def test_a_commit_never_relies_on_a_verification_older_than_max_age():
    now = [0.0]
    calls = []
    fence = Fence(lambda: calls.append(now[0]), max_age=1.0, clock=lambda: now[0])
    fence.before_commit()
    now[0] = 0.5
    fence.before_commit()  # another thread's first commit may share it...
    assert len(calls) == 1
    now[0] = 1.5
    fence.before_commit()
    assert len(calls) == 2


@pytest.mark.parametrize("seed", range(int(os.environ.get("SPACEPORT_TAKEOVER_ROUNDS", "12"))))
def test_a_save_taken_over_at_a_random_moment_writes_at_most_one_file_per_worker(
        tmp_path, monkeypatch, seed):
    """Issue 9, failure 3: a save in flight kept writing 117 files after a takeover."""
    from spaceport.commands.deploy import deploy
    from spaceport.commands.save import save

    rnd = random.Random(seed)
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    jobs = 4
    opts = Options(jobs=jobs, retry=RetryPolicy(attempts=1))
    deploy(primary, work, opts)
    for i in range(300):
        write(work, f"data/{i % 7}/f{i:04}", b"A" * rnd.randint(0, 3000))

    mu = threading.Lock()
    b_holds = threading.Event()
    landed_after: list[str] = []
    original = PosixStore.commit_temp

    def commit_temp(self, fd, tmp, rel, **kw):
        if self.root == primary and rel.startswith("data/"):
            time.sleep(rnd.random() * 0.004)
            with mu:
                if b_holds.is_set():
                    landed_after.append(rel)
        return original(self, fd, tmp, rel, **kw)
    monkeypatch.setattr(PosixStore, "commit_temp", commit_temp)

    result = {}

    def run_save():
        try:
            save(work, opts)
            result["ok"] = True
        except LockLostError as exc:
            result["error"] = exc
    t = threading.Thread(target=run_save)
    t.start()
    time.sleep(rnd.random() * 0.3)
    with PosixStore(primary, PRIMARY_CAPABILITIES, temp_token="bbbbbbbb") as store:
        force_unlock(store, DEFAULT_STATUS_DIR)
        DeploymentLock.acquire(store, DEFAULT_STATUS_DIR, deployment_id="b" * 32,
                               work=WorkCopy("other", "/elsewhere", None))
        with mu:
            b_holds.set()
    t.join(60)
    print(f"seed {seed}: {'lost' if 'error' in result else 'finished first'}, "
          f"{len(landed_after)} file(s) after the takeover")
    assert len(landed_after) <= jobs, landed_after
    if "error" in result:
        message = str(result["error"])
        assert result["error"].exit_code == 4
        for rel in landed_after:
            assert rel in message, (rel, message)
        if not landed_after and not re.search(r"\d+ writes? landed", message):
            assert "Nothing more was written" in message
        match = re.search(r"(\d+) writes? landed", message)
        assert match is None or int(match.group(1)) <= 2 * jobs + 2


def test_a_failed_commit_counts_as_a_commit_and_its_retry_is_fenced_again():
    """A commit that failed may have landed (its answer lost): the retry waits for a
    verification that started after it, even within the verification's max age, and
    the attempt is named among what may have landed after a loss."""
    now = [100.0]
    owner = ["A"]
    reads = []

    def verify():
        reads.append(now[0])
        if owner[0] != "A":
            raise Lost("lost")

    fence = Fence(verify, max_age=1.0, clock=lambda: now[0])
    fence.before_commit()
    assert len(reads) == 1
    now[0] += 0.1
    fence.attempted("Runs/a.mrc")  # the rename answered EIO: it may have landed
    now[0] += 0.1
    owner[0] = "B"  # taken meanwhile
    with pytest.raises(Lost):
        fence.retry_gate("Runs/a.mrc")  # the retry reads the lock again, and stops
    assert len(reads) == 2
    assert fence.after_loss == ["Runs/a.mrc"]  # named once, as what may have landed


def test_a_retry_inside_a_fenced_commit_is_gated_and_stops_on_a_lost_lock(tmp_path):
    """Fence.commit sets the gate the retrying store calls before each retry."""
    from spaceport.store.retry import RetryPolicy
    from spaceport.store.retrying import RetryingStore

    owner = ["A"]
    reads = []

    def verify():
        reads.append(time.monotonic())
        if owner[0] != "A":
            raise Lost("lost")

    store = RetryingStore(PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="0" * 8),
                          RetryPolicy(attempts=5, initial_delay=0.001, max_delay=0.002))
    write(str(tmp_path), "a", b"a")
    calls = []
    real = store.inner.rename

    def flaky(src, dst):  # fails once, then the lock is lost before the retry
        calls.append((src, dst))
        if len(calls) == 1:
            owner[0] = "B"
            raise OSError(5, "Input/output error", src)
        real(src, dst)

    store.inner.rename = flaky
    fence = Fence(verify)
    with pytest.raises(Lost):
        fence.commit("a -> b", lambda: store.rename("a", "b"))
    assert len(calls) == 1 and os.path.exists(tmp_path / "a")  # never retried past the gate
    assert len(reads) == 2 and fence.after_loss == ["a -> b"]
