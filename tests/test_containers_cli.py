"""`capsa run` and the container commands, as a user types them: real
containers from the busybox image in a real store, through .venv/bin/capsa."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time

import pytest

import helpers as h
import image_fixtures as imgs

from image_fixtures import CAPSA


@pytest.fixture(scope="session")
def cli_root(base_dir):
    return imgs.busybox_store(base_dir, "capsa-cli-root")


@pytest.fixture
def capsa(cli_root):
    with imgs.capsa_cli(cli_root) as run:
        yield run


def _new_ids(capsa, before: set[str]) -> list[str]:
    return [r.id for r in capsa.store.all() if r.id not in before]


def test_run_prints_and_removes(capsa):
    before = {r.id for r in capsa.store.all()}
    res = capsa("run", "--rm", "busybox", "echo", "hello")
    assert (res.returncode, res.stdout) == (0, "hello\n"), res.describe()
    assert _new_ids(capsa, before) == []


def test_exit_code_and_default_cmd(capsa):
    res = capsa("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert res.returncode == 3, res.describe()
    res = capsa("run", "--rm", "-i", "busybox", input="echo from-stdin\n")
    assert (res.returncode, res.stdout) == (0, "from-stdin\n"), res.describe()


def test_unknown_command_exits_127(capsa):
    before = {r.id for r in capsa.store.all()}
    res = capsa("run", "busybox", "no-such-command")
    assert res.returncode == 127, res.describe()
    assert "executable file not found in $PATH" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert _new_ids(capsa, before) == []


def test_unknown_image_is_one_line(capsa):
    res = capsa("run", "--rm", "127.0.0.1:1/nothing:here", "true")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.describe()
    assert res.stderr.strip().splitlines()[-1].startswith("capsa: error:")


def test_detached_lifecycle(capsa):
    res = capsa("run", "-d", "--name", "lc-web", "busybox", "sh", "-c",
                "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done")
    assert res.returncode == 0, res.describe()
    cid = res.stdout.strip()
    assert len(cid) == 64
    h.wait_for(lambda: "started" in capsa("logs", "lc-web").stdout)
    ps = capsa("ps")
    assert ps.stdout.splitlines()[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    line = next(l for l in ps.stdout.splitlines() if l.startswith(cid[:12]))
    assert "Up " in line and line.endswith("lc-web") and "busybox" in line
    info = json.loads(capsa("inspect", cid[:8]).stdout)[0]
    assert info["Name"] == "/lc-web" and info["State"]["Running"] and info["State"]["Pid"] > 0
    assert info["GraphDriver"]["Data"]["UpperDir"].endswith("/upper")
    assert capsa("rm", "lc-web").returncode != 0            # running, no -f
    assert capsa("stop", "-t", "5", "lc-web").returncode == 0
    assert capsa("wait", "lc-web").stdout.strip() == "0"
    assert capsa("logs", "lc-web").stdout == "started\nbye\n"
    assert "Exited (0)" in capsa("ps", "-a", "--filter", "name=lc-web").stdout
    assert "lc-web" not in capsa("ps").stdout
    assert capsa("start", "lc-web").returncode == 0
    h.wait_for(lambda: capsa("logs", "lc-web").stdout.count("started") == 2)
    assert capsa("rm", "-f", "lc-web").returncode == 0
    assert capsa("inspect", "lc-web").returncode != 0


def test_name_in_use(capsa):
    assert capsa("create", "--name", "dup-name", "busybox", "true").returncode == 0
    res = capsa("run", "--name", "dup-name", "busybox", "true")
    assert res.returncode != 0 and "already in use" in res.stderr, res.describe()


def test_kill_and_exit_code(capsa):
    cid = capsa("run", "-d", "busybox", "sleep", "100").stdout.strip()
    assert capsa("kill", "-s", "KILL", cid[:12]).returncode == 0
    assert capsa("wait", cid).stdout.strip() == "137"


def test_twenty_concurrent_detached_runs(capsa):
    before = {r.id for r in capsa.store.all()}
    procs = [subprocess.Popen([CAPSA, "--root", str(capsa.root), "run", "-d", "busybox", "sleep", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(20)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = {o[0].strip() for o in outs}
    listed = set(capsa("ps", "-q", "--no-trunc").stdout.split())
    assert ids <= listed and len(ids) == 20
    running = [r for r in capsa.store.all() if r.id in ids and capsa.store.status(r).status == "running"]
    assert len(running) == 20
    assert capsa("rm", "-f", *ids, timeout=120).returncode == 0
    assert _new_ids(capsa, before) == []


def test_restart_policy_via_cli(capsa):
    cid = capsa("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo x; exit 1").stdout.strip()
    h.wait_for(lambda: json.loads(capsa("inspect", cid).stdout)[0]["RestartCount"] == 2
               and json.loads(capsa("inspect", cid).stdout)[0]["State"]["Status"] == "exited", timeout=20)
    assert capsa("logs", cid).stdout == "x\n" * 3


def test_rmi_refuses_an_image_in_use(capsa):
    assert capsa("create", "--name", "uses-image", "busybox", "true").returncode == 0
    res = capsa("rmi", "busybox")
    assert res.returncode != 0, res.describe()
    assert capsa("rm", "uses-image").returncode == 0


def test_it_gives_a_terminal(capsa):
    pid, master = pty.fork()
    if pid == 0:
        os.execv(CAPSA, [CAPSA, "--root", str(capsa.root), "run", "-it", "--rm", "busybox", "sh"])
    try:
        out = h.read_pty(master, ["#"], timeout=20)
        os.write(master, b"[ -t 0 ] && echo TTY-$((6*7)); stty size; exit 5\n")
        out += h.read_pty(master, ["TTY-42"], timeout=20)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert "TTY-42" in out, out
    assert os.waitstatus_to_exitcode(status) == 5, out


def test_exec_pause_stats(capsa):
    cid = capsa("run", "-d", "--name", "exec-me", "-m", "64m", "busybox", "sh", "-c",
                "echo file-content > /made-here; sleep 100").stdout.strip()
    h.wait_for(lambda: capsa("exec", "exec-me", "cat", "/made-here").stdout == "file-content\n", timeout=10)
    res = capsa("exec", "-u", "app", "-w", "/tmp", "-e", "X=1", "exec-me", "sh", "-c", "id -u; pwd; echo $X; exit 4")
    assert (res.returncode, res.stdout) == (4, "1234\n/tmp\n1\n"), res.describe()
    assert capsa("exec", "-i", "exec-me", "cat", input="piped\n").stdout == "piped\n"
    res = capsa("exec", "exec-me", "no-such-thing")
    assert res.returncode == 127 and "executable file not found" in res.stderr, res.describe()
    assert capsa("pause", "exec-me").returncode == 0
    assert "(Paused)" in capsa("ps").stdout
    assert json.loads(capsa("inspect", "exec-me").stdout)[0]["State"]["Paused"]
    assert capsa("unpause", "exec-me").returncode == 0
    st = capsa("stats", "--no-stream", "exec-me")
    assert st.returncode == 0, st.describe()
    row = st.stdout.splitlines()[1]
    assert row.startswith(cid[:12]) and "/ 64MiB" in row and row.split()[-1] == "1"   # sh execs its last command
    assert capsa("kill", "exec-me").returncode == 0
    capsa("wait", "exec-me")
    res = capsa("exec", "exec-me", "true")
    assert res.returncode != 0 and "is not running" in res.stderr, res.describe()


def test_logs_rename_top_prune(capsa):
    cid = capsa("run", "-d", "--name", "chatty", "busybox", "sh", "-c",
                "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; sleep 100").stdout.strip()
    h.wait_for(lambda: "oops" in capsa("logs", "chatty").stderr)
    res = capsa("logs", "--tail", "2", "chatty")
    assert (res.stdout, res.stderr) == ("line5\n", "oops\n"), res.describe()
    stamped = capsa("logs", "-t", "chatty").stdout.splitlines()
    assert stamped[0].endswith("Z line1") and len(stamped) == 5
    assert "sleep 100" in capsa("top", "chatty").stdout
    assert capsa("rename", "chatty", "quiet").returncode == 0
    assert capsa("inspect", "quiet").returncode == 0 and capsa("inspect", "chatty").returncode != 0
    # logs -f follows until the container exits.
    follow = subprocess.Popen([CAPSA, "--root", str(capsa.root), "logs", "-f", "quiet"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert capsa("stop", "-t", "1", "quiet").returncode == 0
    out, _ = follow.communicate(timeout=20)
    assert out == "".join(f"line{i}\n" for i in range(1, 6))
    assert capsa("container", "prune", "-f").returncode == 0
    assert capsa("inspect", cid).returncode != 0


def test_exec_it_gives_a_terminal(capsa):
    capsa("run", "-d", "--name", "tty-host", "busybox", "sleep", "100")
    pid, master = pty.fork()
    if pid == 0:
        os.execv(CAPSA, [CAPSA, "--root", str(capsa.root), "exec", "-it", "tty-host", "sh"])
    try:
        out = h.read_pty(master, ["#"], timeout=20)
        os.write(master, b"[ -t 0 ] && echo EXEC-TTY-$((6*7)); exit 6\n")
        out += h.read_pty(master, ["EXEC-TTY-42"], timeout=20)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert "EXEC-TTY-42" in out, out
    assert os.waitstatus_to_exitcode(status) == 6, out


def test_cp_both_directions(capsa, tmp_path):
    capsa("run", "-d", "--name", "cp-box", "busybox", "sh", "-c",
          "mkdir -p /out/sub && echo inside > /out/sub/f && ln -s /etc/passwd /out/escape && sleep 100")
    h.wait_for(lambda: capsa("exec", "cp-box", "test", "-L", "/out/escape").returncode == 0)
    res = capsa("cp", "cp-box:/out", str(tmp_path))
    assert res.returncode == 0, res.describe()
    assert (tmp_path / "out" / "sub" / "f").read_text() == "inside\n"
    # Not followed, and not kept either: on the host it would point at the host's file.
    assert not os.path.lexists(tmp_path / "out" / "escape")
    assert "warning: skipped symlink out/escape -> /etc/passwd" in res.stderr, res.describe()
    (tmp_path / "in.txt").write_text("from host\n")
    assert capsa("cp", str(tmp_path / "in.txt"), "cp-box:/tmp").returncode == 0
    assert capsa("cp", str(tmp_path / "in.txt"), "cp-box:/renamed.txt").returncode == 0
    assert capsa("exec", "cp-box", "cat", "/tmp/in.txt", "/renamed.txt").stdout == "from host\n" * 2
    res = capsa("cp", "cp-box:/nope", str(tmp_path))
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.describe()


def test_cp_out_of_a_stopped_container(capsa, tmp_path):
    """As `docker cp` after a build step: the files of an exited container,
    read from its overlay root (mounted where the host cannot see it)."""
    name = f"cp-done-{os.getpid()}"
    assert capsa("run", "--name", name, "busybox", "sh", "-c",
                 "mkdir /artifacts && echo built > /artifacts/out.txt").returncode == 0
    res = capsa("cp", f"{name}:/artifacts/out.txt", str(tmp_path / "got.txt"))
    assert res.returncode == 0, res.describe()
    assert (tmp_path / "got.txt").read_text() == "built\n"
    # A detached mount, never attached anywhere: nothing in the container's dir, no host mount.
    rec = capsa.store.find(name)
    assert not (capsa.root / "containers" / rec.id / "merged").exists()
    assert not h.mounts_containing(str(capsa.root)), "the overlay was mounted on the host"
    assert capsa("rm", name).returncode == 0


def test_cp_into_a_created_container_then_start(capsa, tmp_path):
    name = f"cp-new-{os.getpid()}"
    assert capsa("create", "--name", name, "busybox", "cat", "/etc/app.conf").returncode == 0
    (tmp_path / "app.conf").write_text("setting=1\n")
    res = capsa("cp", str(tmp_path / "app.conf"), f"{name}:/etc/")
    assert res.returncode == 0, res.describe()
    res = capsa("start", "-a", name)
    assert res.returncode == 0 and res.stdout == "setting=1\n", res.describe()
    assert capsa("rm", name).returncode == 0


def test_cp_follows_container_symlinks_inside_the_container(capsa, tmp_path):
    """/link -> /etc inside the container is the container's /etc, not the
    host's, for reading and for writing, running or stopped."""
    name = f"cp-link-{os.getpid()}"
    assert capsa("run", "--name", name, "busybox", "sh", "-c",
                 "echo container > /etc/marker && ln -s /etc /link").returncode == 0
    res = capsa("cp", f"{name}:/link/marker", str(tmp_path / "marker"))
    assert res.returncode == 0, res.describe()
    assert (tmp_path / "marker").read_text() == "container\n"
    (tmp_path / "dropped").write_text("x\n")
    res = capsa("cp", str(tmp_path / "dropped"), f"{name}:/link/")
    assert res.returncode == 0, res.describe()
    assert not os.path.exists("/etc/dropped"), "wrote through the link onto the host"
    res = capsa("cp", f"{name}:/etc/dropped", str(tmp_path / "back"))
    assert res.returncode == 0 and (tmp_path / "back").read_text() == "x\n", res.describe()
    assert capsa("rm", name).returncode == 0


def test_foreground_run_writes_the_log(capsa):
    """As Docker: a foreground run without --rm keeps its output for `capsa logs`."""
    name = f"fg-log-{os.getpid()}"
    script = "echo out1; echo err1 >&2; printf 'no newline'; echo; head -c 40000 /dev/zero | tr '\\0' x; echo; exit 4"
    r = capsa("run", "--name", name, "busybox", "sh", "-c", script)
    assert r.returncode == 4, r.stderr
    assert r.stdout.startswith("out1\nno newline\n") and r.stderr == "err1\n"
    logs = capsa("logs", name)
    assert logs.stdout == r.stdout and logs.stderr == "err1\n"
    rec = capsa.store.find(name)
    entries = [json.loads(line) for line in (capsa.root / "containers" / rec.id / f"{rec.id}-json.log").read_text().splitlines()]
    assert [e["log"] for e in entries if e["stream"] == "stderr"] == ["err1\n"]
    assert "".join(e["log"] for e in entries if e["stream"] == "stdout") == r.stdout
    assert all(e["time"].endswith("Z") for e in entries)
    assert max(len(e["log"]) for e in entries) == 16 * 1024  # Docker splits long lines at 16 KiB
    assert capsa("rm", name).returncode == 0
    # With --rm there is nothing to keep: output only goes to the terminal.
    r = capsa("run", "--rm", "busybox", "echo", "gone")
    assert (r.returncode, r.stdout) == (0, "gone\n")


def test_start_attach_and_interactive(capsa):
    tag = os.getpid()
    # -a: the monitor runs it; we follow its output and exit with its code.
    assert capsa("create", "--name", f"sa-{tag}", "busybox", "sh", "-c", "echo attached; echo oops >&2; exit 3").returncode == 0
    r = capsa("start", "-a", f"sa-{tag}")
    assert (r.returncode, r.stdout, r.stderr) == (3, "attached\n", "oops\n")
    # -i: our stdin goes to the container; started again, the same container reads it again.
    assert capsa("create", "-i", "--name", f"si-{tag}", "busybox", "sh", "-c", "read l; echo got $l; exit 5").returncode == 0
    for word in ("one", "two"):
        r = capsa("start", "-ai", f"si-{tag}", input=f"{word}\n")
        assert (r.returncode, r.stdout) == (5, f"got {word}\n"), r.stderr
    assert capsa("logs", f"si-{tag}").stdout == "got one\ngot two\n"
    assert json.loads(capsa("inspect", f"si-{tag}").stdout)[0]["State"]["ExitCode"] == 5
    r = capsa("start", "-i", f"sa-{tag}", f"si-{tag}")
    assert r.returncode != 0 and "multiple" in r.stderr and "Traceback" not in r.stderr
    assert capsa("rm", f"sa-{tag}", f"si-{tag}").returncode == 0


def test_start_ai_gives_the_terminal_of_create_t(capsa):
    name = f"sit-{os.getpid()}"
    assert capsa("create", "-it", "--name", name, "busybox", "sh").returncode == 0
    pid, master = pty.fork()
    if pid == 0:
        os.execv(CAPSA, [CAPSA, "--root", str(capsa.root), "start", "-ai", name])
    try:
        out = h.read_pty(master, ["#"], timeout=20)
        os.write(master, b"[ -t 0 ] && echo TTY-$((6*7)); exit 6\n")
        out += h.read_pty(master, ["TTY-42"], timeout=20)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert "TTY-42" in out, out
    assert os.waitstatus_to_exitcode(status) == 6, out
    assert capsa("rm", name).returncode == 0


def test_ps_fast_path_agrees_with_the_full_cli(capsa):
    """`capsa ps` skips typer (benches/ps_many.py); `capsa container ps` goes through it: same output."""
    name = f"psfast-{os.getpid()}"
    assert capsa("create", "--name", name, "busybox", "sh", "-c", "echo a very long command line here").returncode == 0
    for flags in (["-a"], ["-aq"], ["-a", "--no-trunc"], ["-a", "--format", "json"], ["--format=json"]):
        fast, full = capsa("ps", *flags), capsa("container", "ps", *flags)
        ago = re.compile(r"(Less than a second|About a minute|\d+ \w+) ago")  # may tick between the two
        same = lambda out: re.sub(r" +", " ", ago.sub("", out))  # noqa: E731 (and the column widths with it)
        assert (fast.returncode, same(fast.stdout)) == (full.returncode, same(full.stdout)), flags
    assert name in capsa("ps", "-a").stdout and name not in capsa("ps").stdout
    bad = capsa("ps", "--format", "yaml")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert capsa("rm", name).returncode == 0


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_start_failures_exit_as_docker(capsa, detach):
    """127 command not found, 126 not executable, 125 anything else of the
    engine, chosen from the core's step and errno (not from words), through
    the CLI in-process and through capsa-monitor alike."""
    flags = ["-d"] if detach else ["--rm"]
    cases = [
        (["busybox", "no-such-command"], 127, "executable file not found"),
        (["busybox", "/no/such/file"], 127, "ENOENT"),
        (["busybox", "/etc/passwd"], 126, "EACCES"),
        (["busybox", "/etc"], 126, ""),
        (["-w", "/proc/self/fd/9", "busybox", "true"], 125, "cwd"),
    ]
    for args, code, words in cases:
        res = capsa("run", *flags, *args)
        assert res.returncode == code, (args, res.describe())
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.describe()
        assert "Traceback" not in res.stderr
