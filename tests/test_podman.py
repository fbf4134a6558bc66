"""podman runs containers through capsa-runtime (podman -> conmon -> capsa-runtime
create/start/kill/delete/exec/pause/resume), with a private podman setup
(tests/engines.py) and a busybox image imported from a tarball."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import helpers as h
from engines import IMAGE, cgroup_limits, pty_session, require_runtime_command, require_seccomp
from engines import busybox_tar, podman, podman_home  # noqa: F401  (fixtures)


def inspect(podman, name: str) -> dict:
    return json.loads(podman.ok("inspect", name).stdout)[0]


def test_run_rm_prints_and_leaves_nothing(podman):
    res = podman.ok("run", "--rm", IMAGE, "echo", "hi")
    assert res.stdout == "hi\n"
    assert podman.container_ids() == []


def test_podman_uses_capsa_runtime(podman):
    name = h.new_id("pm")
    podman.ok("run", "--name", name, IMAGE, "true")
    assert inspect(podman, name)["OCIRuntime"] == podman.runtime


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 7", 7), ("exit 255", 255)])
def test_exit_code_propagates(podman, script, code):
    res = podman("run", "--rm", IMAGE, "sh", "-c", script)
    assert res.returncode == code, res.describe()


def test_command_not_found_is_127(podman):
    res = podman("run", "--rm", IMAGE, "/no/such/command")
    assert res.returncode == 127, res.describe()
    assert "/no/such/command" in res.stderr


def test_container_sees_its_own_world(podman):
    """Namespaces and mounts from podman's config.json: pid 1, own hostname, env, workdir, user."""
    res = podman.ok("run", "--rm", "--hostname", "capsa-pm", "--env", "GREETING=hello", "--workdir", "/tmp",
                    "--user", "65534:65534", IMAGE,
                    "sh", "-c", 'echo $$ $(hostname) $GREETING $(pwd) $(id -u):$(id -g); ls /proc/1/ >/dev/null')
    assert res.stdout.split() == ["1", "capsa-pm", "hello", "/tmp", "65534:65534"]


def test_detached_stop_and_rm(podman):
    """-d, ps, logs; stop sends SIGTERM and, when it is ignored (pid 1 without
    a handler), SIGKILL after the timeout; rm removes it."""
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE, "sh", "-c", "echo started; exec sleep 1000")
    info = inspect(podman, name)
    assert info["State"]["Running"] and info["State"]["Pid"] > 0
    assert h.pid_alive(info["State"]["Pid"])
    assert name in podman.ok("ps", "--format", "{{.Names}}").stdout.split()
    h.wait_for(lambda: podman.ok("logs", name).stdout == "started\n", timeout=10, what="container log")

    started = time.monotonic()
    podman.ok("stop", "-t", "1", name)
    assert time.monotonic() - started >= 1.0  # SIGTERM was ignored, the timeout ran out
    state = inspect(podman, name)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137
    assert not h.pid_alive(info["State"]["Pid"])

    podman.remove_ok(name, force=False)
    assert podman("inspect", name).returncode != 0
    assert not (Path("/run/capsa/runtime") / info["Id"]).exists()


def test_stop_delivers_sigterm(podman):
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE,
              "sh", "-c", "trap 'exit 3' TERM; echo ready; while true; do sleep 0.1; done")
    h.wait_for(lambda: "ready" in podman.ok("logs", name).stdout, timeout=10, what="trap installed")
    podman.ok("stop", "-t", "10", name)
    assert inspect(podman, name)["State"]["ExitCode"] == 3
    podman.remove_ok(name, force=False)


def test_kill_and_restart(podman):
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE, "sleep", "1000")
    podman.ok("kill", name)
    h.wait_for(lambda: not inspect(podman, name)["State"]["Running"], timeout=10, what="container killed")
    podman.ok("start", name)
    assert inspect(podman, name)["State"]["Running"]
    podman.remove_ok(name)


def test_exec_in_running_container(podman):
    require_runtime_command(podman.runtime, "exec")
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE, "sleep", "1000")
    res = podman.ok("exec", name, "sh", "-c", "echo $$ from-exec; cat /proc/1/cmdline")
    pid, word, cmdline = res.stdout.split()[0], res.stdout.split()[1], res.stdout.split(None, 2)[2]
    assert word == "from-exec" and pid != "1" and cmdline.startswith("sleep")
    assert podman("exec", name, "sh", "-c", "exit 5").returncode == 5
    res = podman.ok("exec", "--user", "65534", "--workdir", "/tmp", "--env", "X=y", name,
                    "sh", "-c", "echo $(id -u) $(pwd) $X")
    assert res.stdout.split() == ["65534", "/tmp", "y"]
    podman.remove_ok(name)


def test_pause_and_unpause(podman):
    require_runtime_command(podman.runtime, "pause")
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE, "sleep", "1000")
    podman.ok("pause", name)
    assert inspect(podman, name)["State"]["Status"] == "paused"
    pid = inspect(podman, name)["State"]["Pid"]
    assert h.proc_status_field(Path(f"/proc/{pid}/status").read_text(), "State").startswith(("D", "S"))
    podman.ok("unpause", name)
    assert inspect(podman, name)["State"]["Status"] == "running"
    podman.ok("exec", name, "true")
    podman.remove_ok(name)


def test_run_interactive_terminal(podman):
    out, code = pty_session(
        podman.argv("run", "-it", "--rm", IMAGE, "sh"), podman.env,
        [("", "# "), ("tty\n", "/dev/pts/0"), ("echo $((6*7))\n", "42\r\n"), ("exit 4\n", "")])
    assert code == 4, out


def test_exec_interactive_terminal(podman):
    require_runtime_command(podman.runtime, "exec")
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE, "sleep", "1000")
    out, code = pty_session(
        podman.argv("exec", "-it", name, "sh"), podman.env,
        [("", "# "), ("tty\n", "/dev/pts/"), ("echo $((6*7))\n", "42\r\n"), ("exit\n", "")])
    assert code == 0, out
    podman.remove_ok(name)


def test_stdin_is_passed_through(podman):
    res = podman.ok("run", "--rm", "-i", IMAGE, "sh", "-c", "tr a-z A-Z; echo done", input="hello\n")
    assert res.stdout == "HELLO\ndone\n"


def test_volume_readonly_root_and_tmpfs(podman, tmp_path):
    """Bind mounts, a read-only root with podman's tmpfs mounts, and --tmpfs."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host\n")
    res = podman.ok("run", "--rm", "--read-only", "--tmpfs", "/scratch", "-v", f"{data}:/data", IMAGE, "sh", "-c",
                    "cat /data/in.txt; echo back > /data/out.txt; echo x > /scratch/f && echo tmpfs-ok; "
                    "touch /bin/nope 2>/dev/null || echo root-ro")
    assert res.stdout.split("\n")[:3] == ["from the host", "tmpfs-ok", "root-ro"]
    assert (data / "out.txt").read_text() == "back\n"


def test_resource_limits_reach_the_cgroup(podman):
    """podman's --memory and --pids-limit become the container's cgroup limits."""
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "40", IMAGE, "sleep", "1000")
    pid = inspect(podman, name)["State"]["Pid"]
    limits = cgroup_limits(pid)
    assert limits["memory"] == 64 * 1024 * 1024
    assert limits["pids"] == 40
    podman.remove_ok(name)


def test_user_namespace_mapping(podman):
    """--uidmap/--gidmap: podman chowns the rootfs copy, the runtime writes the maps."""
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, "--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536",
              IMAGE, "sh", "-c", "id -u; touch /tmp/x && echo writable; exec sleep 1000")
    pid = inspect(podman, name)["State"]["Pid"]
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "200000", "65536"]
    assert h.proc_status_field(Path(f"/proc/{pid}/status").read_text(), "Uid").split()[0] == "200000"
    h.wait_for(lambda: podman.ok("logs", name).stdout == "0\nwritable\n", timeout=10, what="container output")
    podman.remove_ok(name)


def test_update_changes_limits_of_a_running_container(podman):
    """podman update -> capsa-runtime update --resources: the new limits reach the cgroup."""
    require_runtime_command(podman.runtime, "update")
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "40", IMAGE, "sleep", "1000")
    pid = inspect(podman, name)["State"]["Pid"]
    podman.ok("update", "--memory", "96m", name)
    assert cgroup_limits(pid) == {"memory": 96 * 1024 * 1024, "pids": 40}
    podman.remove_ok(name)


def test_default_seccomp_profile_applies(podman):
    """podman puts its default profile (containers-common) in config.json;
    --security-opt seccomp=unconfined leaves it out."""
    require_seccomp(podman.runtime)
    script = "grep ^Seccomp: /proc/self/status"
    assert podman.ok("run", "--rm", IMAGE, "sh", "-c", script).stdout.split() == ["Seccomp:", "2"]
    res = podman.ok("run", "--rm", "--security-opt", "seccomp=unconfined", IMAGE, "sh", "-c", script)
    assert res.stdout.split() == ["Seccomp:", "0"]


def test_exec_gets_the_seccomp_profile(podman):
    require_seccomp(podman.runtime)
    require_runtime_command(podman.runtime, "exec")
    name = h.new_id("pm")
    podman.ok("run", "-d", "--name", name, IMAGE, "sleep", "1000")
    res = podman.ok("exec", name, "grep", "^Seccomp:", "/proc/self/status")
    assert res.stdout.split() == ["Seccomp:", "2"]
    podman.remove_ok(name)
