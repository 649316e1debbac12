"""A killed clean leaves no scan worker behind: the kernel kills each worker when its parent dies (Linux)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

# A scan whose every file takes half a second, so that the workers are busy, with more work queued, when the
# parent is killed: without the kernel's help they would finish their chunk, then wait for work for ever.
SLOW_SCAN = """
import time
from medal.clean import scan

real = scan.scan_file
def slow(job, cache=None):
    time.sleep(0.5)
    return real(job, cache)
scan.scan_file = slow  # the workers are forked, so they inherit it
scan.scan_files([scan.ScanJob(f"/nonexistent/{i}.png") for i in range(400)], workers=3)
"""


def process_state(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a live process, from /proc/<pid>/stat; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name, in brackets, may hold spaces
    return int(fields[1]), fields[0]


def children(parent: int) -> list[int]:
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return [pid for pid in pids if (state := process_state(pid)) is not None and state[0] == parent]


def alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state[1] not in ("Z", "X")  # a zombie is dead, only not yet reaped


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.slow
def test_killing_the_scan_kills_its_workers():
    parent = subprocess.Popen([sys.executable, "-c", SLOW_SCAN], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        assert wait_for(lambda: len(children(parent.pid)) >= 3, 60), "the scan never started its 3 workers"
        workers = children(parent.pid)
        time.sleep(0.5)  # past the initializer, into the slow scan
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        survived = not wait_for(lambda: not any(alive(pid) for pid in workers), 5)
        assert not survived, f"scan workers {[pid for pid in workers if alive(pid)]} outlived their killed parent"
    finally:
        parent.kill()
        parent.wait(10)
        for pid in workers:  # when the test fails: the workers this test started, by their ids
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_died_before_it_was_armed_exits_at_once():
    # The kernel signal is armed in the worker, after the fork: a parent gone by then never triggers it, and the
    # worker sees another parent (init). Here the "parent" it expects is another pid, as after such a death.
    import multiprocessing

    from medal.clean.scan import _die_with_parent

    context = multiprocessing.get_context("fork")
    orphan = context.Process(target=_die_with_parent, args=(os.getpid() + 10**6,))
    orphan.start()
    orphan.join(10)
    child = context.Process(target=_die_with_parent, args=(os.getpid(),))
    child.start()
    child.join(10)
    assert (orphan.exitcode, child.exitcode) == (1, 0)
