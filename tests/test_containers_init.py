"""`capsa run --init`: capsa-init (rust/init) is PID 1, the command its
child; orphans are reaped, signals reach the command, its exit code is the
container's. Real containers from the busybox image through .venv/bin/capsa."""

from __future__ import annotations

import json
import time
import uuid

import pytest

import image_fixtures as imgs


# Every process's pid, state and name, read from /proc (busybox ps has no STAT column here).
PROCS = 'for f in /proc/[0-9]*/stat; do read -r pid comm state rest < $f; echo "$pid $state $comm"; done'


@pytest.fixture(scope="module")
def init_root(base_dir):
    return imgs.busybox_store(base_dir, "capsa-init-root")


@pytest.fixture
def capsa(init_root):
    with imgs.capsa_cli(init_root, must_remove_own=True) as run:
        yield run


def _procs(out: str) -> dict[int, tuple[str, str]]:
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {int(p): (state, comm.strip("()")) for p, state, comm in rows}


def test_init_is_pid1_and_the_command_its_child(capsa):
    r = capsa("run", "--rm", "--init", "busybox", "sh", "-c", f'echo "me $$ parent $PPID"; {PROCS}')
    assert r.returncode == 0, r.stderr
    first, *rest = r.stdout.splitlines()
    _, me, _, parent = first.split()
    assert int(me) >= 2 and int(parent) == 1
    procs = _procs("\n".join(rest))
    assert procs[1][1] == "init", procs  # /dev/init: the kernel names it by its file name
    cmdline = capsa("run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline").stdout
    assert cmdline.split("\0")[:2] == ["/dev/init", "--"]


def test_orphaned_zombie_is_reaped(capsa):
    # The command becomes `sleep`, which never waits; a grandchild orphaned by its
    # parent becomes PID 1's child and exits at once; a background reader lists /proc.
    script = f"(sleep 1; {PROCS}) & sh -c 'sleep 0.1 &'; exec sleep 2"
    with_init = _procs(capsa("run", "--rm", "--init", "busybox", "sh", "-c", script).stdout)
    assert with_init[1][1] == "init" and [p for p, (state, _) in with_init.items() if state == "Z"] == [], with_init
    # The contrast, same command without --init: the orphan stays a zombie of PID 1.
    without = _procs(capsa("run", "--rm", "busybox", "sh", "-c", script).stdout)
    assert [comm for state, comm in without.values() if state == "Z"] == ["sleep"], without


def test_signals_reach_the_command(capsa):
    name = f"init-sig-{uuid.uuid4().hex[:6]}"
    r = capsa("run", "-d", "--init", "--name", name, "busybox", "sh", "-c",
              'trap "echo got-usr1" USR1; trap "echo got-term; exit 3" TERM; echo ready; while :; do sleep 0.1; done')
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while "ready" not in capsa("logs", name).stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert capsa("kill", "-s", "USR1", name).returncode == 0
    deadline = time.monotonic() + 10
    while "got-usr1" not in capsa("logs", name).stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "got-usr1" in capsa("logs", name).stdout
    r = capsa("stop", "-t", "10", name)
    assert r.returncode == 0, r.stderr
    assert capsa("wait", name).stdout.strip() == "3"
    assert "got-term" in capsa("logs", name).stdout
    state = json.loads(capsa("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 3 and not state["Running"]
    assert capsa("rm", name).returncode == 0


@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 7", 7), ("kill -KILL $$", 137)])
def test_exit_code_propagates(capsa, script, code):
    r = capsa("run", "--rm", "--init", "busybox", "sh", "-c", script)
    assert r.returncode == code, r.stderr


def test_unknown_command_is_127(capsa):
    r = capsa("run", "--rm", "--init", "busybox", "no-such-command")
    assert r.returncode == 127
    assert "executable file not found in $PATH" in r.stderr
