"""The `capsa-runtime` CLI against runc's command contract: what a process
sees inside the container, and the create/start/state/kill/delete lifecycle.

Every test runs real containers on the real kernel. CAPSA_TEST_RUNTIME=runc
runs the same tests against runc (that is how they were validated).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import helpers as h


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def run_ok(ctx, script, **overrides) -> str:
    res = ctx.run(sh(script), **overrides)
    assert res.returncode == 0, res.describe()
    return res.stdout


def wait_file(path: Path, timeout=10.0):
    h.wait_for(path.exists, timeout, what=f"{path} to appear")


# ==========================================================================
# Inside the container
# ==========================================================================

def test_process_is_pid_1(ctx):
    assert run_ok(ctx, "echo $$").strip() == "1"


def test_hostname_as_configured(ctx):
    assert run_ok(ctx, "hostname", hostname="box-42").strip() == "box-42"


def test_new_network_namespace_has_only_lo(ctx):
    assert run_ok(ctx, "ls /sys/class/net").split() == ["lo"]


def test_namespaces_differ_from_host(ctx):
    kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
    out = run_ok(ctx, " ; ".join(f"readlink /proc/self/ns/{k}" for k in kinds))
    inside = out.split()
    assert len(inside) == len(kinds), out
    for kind, link in zip(kinds, inside):
        host = os.readlink(f"/proc/self/ns/{kind}")
        assert link.startswith(f"{kind}:["), link
        assert link != host, f"{kind} namespace is the host's ({host})"


def test_without_namespace_shares_the_hosts(ctx):
    out = run_ok(ctx, "readlink /proc/self/ns/uts; readlink /proc/self/ns/net",
                 namespaces=["pid", "ipc", "mount"], hostname=None)
    uts, net = out.split()
    assert uts == os.readlink("/proc/self/ns/uts")
    assert net == os.readlink("/proc/self/ns/net")


def test_own_mount_table_with_rootfs_as_root(ctx):
    out = run_ok(ctx, "cat /etc/capsa-test-rootfs; cat /proc/self/mountinfo")
    marker, _, mountinfo = out.partition("\n")
    assert marker == "capsa-test"
    host_mountinfo = Path("/proc/self/mountinfo").read_text()
    assert mountinfo.strip() != host_mountinfo.strip()

    mounts = {}
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        mounts[fields[4]] = (fields[3], post.split()[0], fields[5])
    # "/" is the rootfs: its root within the host filesystem is the rootfs dir
    mp, fsroot, _ = h.host_mount_of(ctx.rootfs)
    expected_root = os.path.normpath(
        os.path.join(fsroot, os.path.relpath(os.path.realpath(ctx.rootfs), mp)))
    assert "/" in mounts, mountinfo
    assert mounts["/"][0] == expected_root, mountinfo
    assert "ro" in mounts["/"][2].split(","), "readonly root should be mounted ro"
    for dest, fstype in [("/proc", "proc"), ("/dev", "tmpfs"), ("/dev/pts", "devpts"),
                         ("/dev/shm", "tmpfs"), ("/dev/mqueue", "mqueue"),
                         ("/sys", "sysfs")]:
        assert dest in mounts, f"{dest} not mounted:\n{mountinfo}"
        assert mounts[dest][1] == fstype, f"{dest}: {mounts[dest]}"
    assert "ro" in mounts["/sys"][2].split(",")
    # no host mount point leaks in (e.g. the host's /sys/fs/cgroup/unified or
    # the temp dir the bundle lives in)
    assert str(ctx.tmp) not in mountinfo
    assert "/sys/fs/cgroup" in mounts


def test_cgroup_mount_is_readonly(ctx):
    # (runc leaves the tmpfs holding the v1 hierarchies writable; the
    # hierarchies themselves must be read-only)
    res = ctx.run(sh("ls /sys/fs/cgroup; "
                     "for d in /sys/fs/cgroup/*/; do mkdir $d/x 2>/dev/null && echo WROTE $d; done; "
                     "true"))
    assert res.returncode == 0, res.describe()
    assert "WROTE" not in res.stdout, res.describe()
    assert res.stdout.split(), "cgroup filesystem should be visible"


def test_masked_paths(ctx):
    existing = [p for p in h.MASKED_PATHS if os.path.exists(p)]
    assert existing, "no masked path exists on this host"
    script = []
    for p in existing:
        if os.path.isdir(p):
            script.append(f'echo "{p} $(ls -A {p} | wc -l)"')
        else:
            script.append(f'echo "{p} $(cat {p} 2>/dev/null | wc -c)"')
    # Masked directories (one read-only tmpfs, bound on each) take no writes.
    dirs = [p for p in existing if os.path.isdir(p)]
    script += [f'mkdir {p}/x 2>/dev/null && echo "WROTE {p}"' for p in dirs] + ["true"]
    out = run_ok(ctx, "; ".join(script))
    assert "WROTE" not in out, out
    sizes = dict(line.split() for line in out.splitlines())
    for p in existing:
        assert sizes[p] == "0", f"{p} is not masked: {sizes[p]} entries/bytes visible"


def test_readonly_paths(ctx):
    res = ctx.run(sh("echo capsa > /proc/sys/kernel/domainname && echo WROTE; "
                     "cat /proc/sys/kernel/domainname"))
    assert "WROTE" not in res.stdout, res.describe()
    assert "read-only" in res.stderr.lower(), res.describe()


def test_readonly_root_refuses_writes(ctx):
    res = ctx.run(sh("touch /x && echo WROTE; touch /etc/y && echo WROTE; exit 0"))
    assert res.returncode == 0, res.describe()
    assert "WROTE" not in res.stdout, res.describe()
    assert "read-only" in res.stderr.lower(), res.describe()
    assert not (ctx.rootfs / "x").exists()


def test_writable_root(ctx):
    own = ctx.own_rootfs()
    out = run_ok(ctx, "echo hi > /made-inside && cat /made-inside",
                 root_path=str(own), readonly=False)
    assert out.strip() == "hi"
    assert (own / "made-inside").read_text() == "hi\n"


def test_relative_rootfs_path_in_bundle(ctx):
    cid = ctx.new_id()
    bundle = ctx.tmp / f"bundle-{cid}"
    h.build_rootfs(bundle / "rootfs")
    (bundle / "rootfs" / h.ROOTFS_MARKER).write_text("own-rootfs\n")
    _, config = ctx.config(sh("cat /etc/capsa-test-rootfs"), cid, root_path="rootfs")
    ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    assert res.stdout.strip() == "own-rootfs"


def test_no_fds_leak_into_container(ctx):
    """Only stdio crosses into the container (a leaked runtime fd, e.g. a
    directory fd, is how CVE-2024-21626 escaped runc)."""
    # ls is a child of PID 1 (sh) and lists PID 1's fds
    out = run_ok(ctx, "ls /proc/1/fd; ls -l /proc/1/fd >&2")
    assert sorted(out.split(), key=int) == ["0", "1", "2"], out


def test_process_has_no_parent_inside(ctx):
    out = run_ok(ctx, "grep -E '^(PPid|Pid):' /proc/self/status")
    assert out.split() == ["Pid:", "1", "PPid:", "0"]


def test_default_devices(ctx):
    script = " ; ".join(
        [f'[ -c /dev/{d} ] && echo "{d} ok"' for d in
         ("null", "zero", "full", "random", "urandom", "tty")]
        + ['echo discard > /dev/null && echo "write ok"',
           'echo "zero $(head -c 5 /dev/zero | wc -c)"',
           'echo "fd $(readlink /dev/fd)"',
           '[ -e /dev/ptmx ] && echo "ptmx ok"'])
    out = run_ok(ctx, script)
    for d in ("null", "zero", "full", "random", "urandom", "tty", "write", "ptmx"):
        assert f"{d} ok" in out, out
    assert "zero 5" in out
    assert "fd /proc/self/fd" in out


def _caps(status_text):
    return {k: int(h.proc_status_field(status_text, k), 16)
            for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def test_default_capabilities(ctx):
    caps = _caps(run_ok(ctx, "cat /proc/self/status"))
    want = h.cap_mask(h.DEFAULT_CAPS)
    assert caps["CapBnd"] == want, f"{caps['CapBnd']:x} != {want:x}"
    assert caps["CapPrm"] == want, f"{caps['CapPrm']:x} != {want:x}"
    assert caps["CapEff"] == want, f"{caps['CapEff']:x} != {want:x}"
    assert caps["CapAmb"] == 0


def test_reduced_capabilities(ctx):
    reduced = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
    res = ctx.run(sh("cat /proc/self/status; touch /dev/shm/f; "
                     "chown 1:1 /dev/shm/f && echo CHOWNED; exit 0"),
                  capabilities=reduced)
    assert res.returncode == 0, res.describe()
    caps = _caps(res.stdout)
    want = h.cap_mask(reduced)
    for k in ("CapBnd", "CapPrm", "CapEff"):
        assert caps[k] == want, f"{k} {caps[k]:x} != {want:x}"
    assert "CHOWNED" not in res.stdout, "chown worked without CAP_CHOWN"


def test_chown_works_with_default_capabilities(ctx):
    out = run_ok(ctx, "touch /dev/shm/f && chown 1:1 /dev/shm/f && echo CHOWNED")
    assert "CHOWNED" in out


def test_user_group_and_additional_gids(ctx):
    out = run_ok(ctx, "id -u; id -g; id -G; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
                 user={"uid": 1000, "gid": 1001, "additionalGids": [100, 5]})
    lines = out.splitlines()
    assert lines[0] == "1000"
    assert lines[1] == "1001"
    assert set(lines[2].split()) == {"1001", "100", "5"}
    caps = {l.split(":")[0]: int(l.split(":")[1], 16) for l in lines[3:]}
    # a non-root process keeps no effective capabilities across exec
    assert caps["CapEff"] == 0
    assert caps["CapBnd"] == h.cap_mask(h.DEFAULT_CAPS)


def test_env_and_cwd(ctx):
    env = ["PATH=/bin", "FOO=bar baz", "EMPTY="]
    host_env = dict(os.environ, CAPSA_HOST_ONLY="leak")
    cid, bundle = ctx.bundle(sh("pwd; env"), env=env, cwd="/etc")
    res = ctx.cli("run", "--bundle", bundle, cid, env=host_env)
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert lines[0] == "/etc"
    assert "FOO=bar baz" in lines
    assert "EMPTY=" in lines
    assert "PATH=/bin" in lines
    assert not any("CAPSA_HOST_ONLY" in l for l in lines), "host env leaked in"


def test_user_namespace_mapping(ctx):
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    out = run_ok(ctx, "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                      "readlink /proc/self/ns/user",
                 extra_namespaces=["user"], uid_mappings=mapping, gid_mappings=mapping)
    lines = out.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] == "0"
    assert lines[3] != os.readlink("/proc/self/ns/user")


def test_run_joins_another_containers_user_and_network_namespaces(ctx):
    """As a pod: `run` joins the user and network namespaces of a running
    container by path. The parent then writes no maps, and the new init
    still lands in its own cgroup in every hierarchy (the parent moves it:
    a user namespace's root may not)."""
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    first, _ = ctx.create(["sleep", "1000"], extra_namespaces=["user"], uid_mappings=mapping, gid_mappings=mapping)
    ctx.ok("start", first)
    pid = ctx.state(first)["pid"]
    namespaces = [n for n in h.DEFAULT_NAMESPACES if n != "network"]
    namespaces += [{"type": "user", "path": f"/proc/{pid}/ns/user"},
                   {"type": "network", "path": f"/proc/{pid}/ns/net"}]
    second, bundle = ctx.bundle(["sleep", "1000"], namespaces=namespaces)
    ctx.ok("run", "--detach", "--bundle", bundle, second)
    pid2 = ctx.state(second)["pid"]
    for kind in ("user", "net"):
        assert os.readlink(f"/proc/{pid2}/ns/{kind}") == os.readlink(f"/proc/{pid}/ns/{kind}"), kind
    assert h.proc_status_field(Path(f"/proc/{pid2}/status").read_text(), "Uid").split()[0] == "100000"
    want = h.cgroup_path_for(second)
    for line in Path(f"/proc/{pid2}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("memory", "pids", "") or "cpu" in controllers.split(","):
            assert path == want, line
    ctx.ok("delete", "--force", second)
    ctx.ok("delete", "--force", first)


def test_user_namespace_host_uid(ctx, tmp_path):
    """The container's root writes a file through a bind mount: on the host
    it belongs to the mapped uid."""
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    shared = ctx.shared_dir()
    run_ok(ctx, "touch /shared/by-root",
           extra_namespaces=["user"], uid_mappings=mapping, gid_mappings=mapping,
           extra_mounts=[ctx.bind_mount(shared)])
    st = os.stat(shared / "by-root")
    assert (st.st_uid, st.st_gid) == (100000, 100000)


def test_rlimits(ctx):
    out = run_ok(ctx, "ulimit -n; ulimit -Hn",
                 rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}])
    assert out.split() == ["512", "768"]


def test_default_rlimit_nofile(ctx):
    assert run_ok(ctx, "ulimit -n; ulimit -Hn").split() == ["1024", "1024"]


@pytest.mark.parametrize("nnp,want", [(True, "1"), (False, "0")])
def test_no_new_privileges(ctx, nnp, want):
    out = run_ok(ctx, "grep NoNewPrivs /proc/self/status", no_new_privileges=nnp)
    assert out.split() == ["NoNewPrivs:", want]


def test_bind_mounts(ctx):
    rw = ctx.shared_dir("rw")
    ro = ctx.shared_dir("ro")
    (ro / "given").write_text("from host\n")
    res = ctx.run(sh("echo from container > /shared/made; cat /ro/given; "
                     "touch /ro/nope && echo WROTE; exit 0"),
                  extra_mounts=[ctx.bind_mount(rw), ctx.bind_mount(ro, "/ro", ro=True)])
    assert res.returncode == 0, res.describe()
    assert (rw / "made").read_text() == "from container\n"
    assert "from host" in res.stdout
    assert "WROTE" not in res.stdout
    assert not (ro / "nope").exists()


def test_tmpfs_mount_on_readonly_root(ctx):
    out = run_ok(ctx, "echo data > /tmp/f && cat /tmp/f",
                 extra_mounts=[{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                "options": ["nosuid", "nodev", "mode=1777"]}])
    assert out.strip() == "data"


# ==========================================================================
# run: stdio, exit codes
# ==========================================================================

@pytest.mark.parametrize("code", [0, 7, 255])
def test_run_exit_code(ctx, code):
    res = ctx.run(sh(f"exit {code}"))
    assert res.returncode == code, res.describe()


def test_run_returns_when_pid1_exits_leaving_children(ctx):
    """PID 1 exits while a background child still runs (and holds stdout):
    the kernel kills the rest of the pid namespace and run returns PID 1's
    code."""
    res = ctx.run(sh("sleep 1000 & echo started; exit 5"), timeout=20)
    assert res.returncode == 5, res.describe()
    assert res.stdout == "started\n"


def test_run_deletes_container(ctx):
    cid, bundle = ctx.bundle(["true"])
    ctx.ok("run", "--bundle", bundle, cid)
    assert ctx.cli("state", cid).returncode != 0
    assert not ctx.state_entries(cid)
    assert not ctx.leftover_cgroups(cid)


def test_run_stdout_stderr_stdin(ctx):
    res = ctx.run(sh("read line; echo out:$line; echo err >&2; exit 3"),
                  input="hello\n")
    assert res.returncode == 3, res.describe()
    assert res.stdout == "out:hello\n"
    assert "err\n" in res.stderr


def test_run_large_output(ctx):
    res = ctx.run(sh("head -c 3000000 /dev/zero | tr '\\0' x"))
    assert res.returncode == 0, res.describe()
    assert len(res.stdout) == 3000000


def test_run_unknown_executable_in_path_is_error(ctx):
    res = ctx.run(["nosuchcmd"])
    ctx.assert_error(res, mentions=["nosuchcmd"])


def test_run_detach(ctx):
    shared = ctx.shared_dir()
    cid, bundle = ctx.bundle(sh("echo up > /shared/up; sleep 1000"),
                             extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("run", "--detach", "--bundle", bundle, cid)
    st = ctx.state(cid)
    assert st["status"] == "running"
    assert h.pid_alive(st["pid"])
    wait_file(shared / "up")
    ctx.ok("kill", cid, "KILL")
    ctx.wait_status(cid, "stopped")
    ctx.ok("delete", cid)
    assert not h.pid_alive(st["pid"])


def test_run_detach_pid_file(ctx):
    cid, bundle = ctx.bundle(["sleep", "1000"])
    pid_file = ctx.tmp / "run.pid"
    ctx.ok("run", "--detach", "--pid-file", pid_file, "--bundle", bundle, cid)
    assert int(pid_file.read_text().strip()) == ctx.state(cid)["pid"]
    ctx.ok("delete", "--force", cid)


@pytest.mark.parametrize("flag", ["--no-pivot", "--no-new-keyring"])
def test_run_flags(ctx, flag):
    cid, bundle = ctx.bundle(sh("echo $$; cat /etc/capsa-test-rootfs; ls /"))
    res = ctx.cli("run", flag, "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert lines[:2] == ["1", "capsa-test"]
    assert "tmp" in lines[2:] and "etc" in lines[2:]
    ctx.assert_nothing_left(cid)


def test_create_start_with_flags(ctx):
    pid_file = ctx.tmp / "flags.pid"
    cid, _ = ctx.create(["sleep", "1000"], "--no-pivot", "--no-new-keyring",
                        "--pid-file", pid_file)
    ctx.ok("start", cid)
    assert ctx.state(cid)["status"] == "running"
    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


# ==========================================================================
# Lifecycle
# ==========================================================================

def test_lifecycle(ctx):
    shared = ctx.shared_dir()
    cid, bundle = ctx.bundle(
        sh("echo > /shared/started; while [ ! -e /shared/go ]; do sleep 0.05; done"),
        extra_mounts=[ctx.bind_mount(shared)], annotations={"org.capsa.test": "yes"})
    ctx.ok("create", "--bundle", bundle, cid)

    st = ctx.state(cid)
    for field in ("ociVersion", "id", "status", "pid", "bundle", "rootfs", "created",
                  "owner"):
        assert field in st, f"state lacks {field}: {st}"
    assert st["id"] == cid
    assert st["status"] == "created"
    assert st["bundle"] == str(bundle)
    assert st["rootfs"] == str(ctx.rootfs)
    assert st.get("annotations", {}).get("org.capsa.test") == "yes"
    pid = st["pid"]
    assert pid > 0 and h.pid_alive(pid)
    assert not (shared / "started").exists(), "process ran before start"

    ctx.ok("start", cid)
    wait_file(shared / "started")
    st = ctx.state(cid)
    assert st["status"] == "running"
    assert st["pid"] == pid

    (shared / "go").touch()
    st = ctx.wait_status(cid, "stopped")
    assert not h.pid_alive(pid)

    ctx.ok("delete", cid)
    res = ctx.cli("state", cid)
    ctx.assert_error(res)
    ctx.assert_nothing_left(cid)


def test_relative_bundle_path(ctx):
    """--bundle relative to the caller's cwd; state reports it absolute."""
    cid, bundle = ctx.bundle(["sleep", "1000"])
    ctx.ok("create", "--bundle", bundle.name, cid, cwd=bundle.parent)
    st = ctx.state(cid)
    assert st["bundle"] == str(bundle)
    assert st["status"] == "created"
    ctx.ok("delete", "--force", cid)


def test_bundle_defaults_to_cwd(ctx):
    cid, bundle = ctx.bundle(sh("echo from-cwd-bundle"))
    res = ctx.cli("run", cid, cwd=bundle)
    assert res.returncode == 0, res.describe()
    assert res.stdout == "from-cwd-bundle\n"


def test_start_twice_fails(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    res = ctx.cli("start", cid)
    ctx.assert_error(res)
    assert ctx.state(cid)["status"] == "running"
    ctx.ok("delete", "--force", cid)


def test_start_stopped_container_fails(ctx):
    cid, _ = ctx.create(["true"])
    ctx.ok("start", cid)
    ctx.wait_status(cid, "stopped")
    ctx.assert_error(ctx.cli("start", cid))
    ctx.ok("delete", cid)


def test_pid_file_matches_state(ctx):
    pid_file = ctx.tmp / "ct.pid"
    cid, _ = ctx.create(["sleep", "1000"], "--pid-file", pid_file)
    assert int(pid_file.read_text().strip()) == ctx.state(cid)["pid"]
    ctx.ok("delete", "--force", cid)


def test_delete_created_container(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    pid = ctx.state(cid)["pid"]
    ctx.ok("delete", cid)
    h.wait_for(lambda: not h.pid_alive(pid), 5, what="created process to go")
    ctx.assert_nothing_left(cid)


# PID 1 of a pid namespace only receives signals it has a handler for (KILL
# aside): trap TERM, then tell the test it is ready.
TRAP_TERM = sh("trap 'exit 0' TERM; sleep 1000 & echo > /shared/ready; wait")


@pytest.mark.parametrize("sig", [None, "TERM", "SIGTERM", "15", "KILL", "SIGKILL", "9"])
def test_kill_signal_forms(ctx, sig):
    shared = ctx.shared_dir()
    cid, _ = ctx.create(TRAP_TERM,
                        extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]
    wait_file(shared / "ready")
    ctx.ok("kill", cid, *([sig] if sig else []))
    ctx.wait_status(cid, "stopped")
    assert not h.pid_alive(pid)
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


def test_kill_invalid_signal(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    ctx.assert_error(ctx.cli("kill", cid, "NOSUCHSIGNAL"))
    assert ctx.state(cid)["status"] == "running"
    ctx.ok("delete", "--force", cid)


def test_kill_all(ctx):
    shared = ctx.shared_dir()
    cid, _ = ctx.create(sh("sleep 1000 & sleep 1000 & echo > /shared/ready; wait"),
                        extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("start", cid)
    wait_file(shared / "ready")
    pids = json.loads(ctx.ok("ps", "--format", "json", cid).stdout)
    assert len(pids) >= 3, pids
    ctx.ok("kill", "--all", cid, "KILL")
    ctx.wait_status(cid, "stopped")
    h.wait_for(lambda: not any(h.pid_alive(p) for p in pids), 5,
               what="all container processes to die")
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


def test_list_and_ps(ctx):
    shared = ctx.shared_dir()
    cid, _ = ctx.create(sh("sleep 1000 & echo > /shared/ready; wait"),
                        extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("start", cid)
    wait_file(shared / "ready")
    pid = ctx.state(cid)["pid"]

    listed = json.loads(ctx.ok("list", "--format", "json").stdout)
    mine = [c for c in listed if c["id"] == cid]
    assert len(mine) == 1, listed
    assert mine[0]["status"] == "running"
    assert mine[0]["pid"] == pid

    table = ctx.ok("list").stdout
    assert "ID" in table.splitlines()[0]
    assert any(line.split()[0] == cid for line in table.splitlines()[1:]), table
    table = ctx.ok("list", "--format", "table").stdout
    assert cid in table

    pids = json.loads(ctx.ok("ps", "--format", "json", cid).stdout)
    assert pid in pids
    assert len(pids) == 2, pids  # sh and its sleep
    assert all(isinstance(p, int) for p in pids)
    ctx.ok("delete", "--force", cid)


def test_list_empty_root(ctx):
    out = ctx.ok("list", "--format", "json").stdout
    assert json.loads(out) in ([], None)


def test_delete_running_needs_force(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]
    ctx.assert_error(ctx.cli("delete", cid))
    assert ctx.state(cid)["status"] == "running"
    assert h.pid_alive(pid)
    ctx.ok("delete", "--force", cid)
    h.wait_for(lambda: not h.pid_alive(pid), 5, what="container process to die")
    ctx.assert_nothing_left(cid)


def test_several_containers_side_by_side(ctx):
    ids = []
    for _ in range(3):
        cid, _ = ctx.create(["sleep", "1000"])
        ctx.ok("start", cid)
        ids.append(cid)
    listed = {c["id"] for c in json.loads(ctx.ok("list", "--format", "json").stdout)}
    assert set(ids) <= listed
    pids = {ctx.state(c)["pid"] for c in ids}
    assert len(pids) == 3
    for cid in ids:
        ctx.ok("delete", "--force", cid)
        ctx.assert_nothing_left(cid)


def test_default_cgroup_path(ctx):
    """No linux.cgroupsPath: the runtime picks one (capsa: /capsa/<id>; runc: /<id>)
    and removes it on delete."""
    cid = ctx.new_id()
    ctx.track_cgroup(f"/capsa/{cid}")
    ctx.track_cgroup(f"/{cid}")
    _, bundle = ctx.bundle(["sleep", "1000"], cid, cgroups_path=None)
    ctx.ok("create", "--bundle", bundle, cid)
    ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    memory = [l.split(":", 2)[2] for l in lines if l.split(":")[1] == "memory"]
    assert memory and memory[0].endswith("/" + cid), lines
    if not ctx.is_runc:
        assert memory[0] == f"/capsa/{cid}"
    ctx.ok("delete", "--force", cid)
    assert not h.cgroup_dirs(memory[0])


# ==========================================================================
# spec, features, version, flags
# ==========================================================================

def test_spec_writes_default_config(ctx):
    bundle = ctx.tmp / "specbundle"
    bundle.mkdir()
    ctx.ok("spec", "--bundle", bundle, root=False)
    config = json.loads((bundle / "config.json").read_text())
    assert config["ociVersion"]
    assert config["root"]["path"] == "rootfs"
    assert config["process"]["args"]
    assert {n["type"] for n in config["linux"]["namespaces"]} >= {"pid", "mount"}

    before = (bundle / "config.json").read_text()
    res = ctx.cli("spec", "--bundle", bundle, root=False)
    ctx.assert_error(res)
    assert (bundle / "config.json").read_text() == before


def test_spec_in_cwd(ctx):
    d = ctx.tmp / "speccwd"
    d.mkdir()
    ctx.ok("spec", root=False, cwd=d)
    assert json.loads((d / "config.json").read_text())["ociVersion"]


def test_spec_output_is_runnable(ctx):
    """The runtime's own default spec, with our rootfs and a non-tty process,
    runs."""
    bundle = ctx.tmp / "specrun"
    bundle.mkdir()
    os.chmod(bundle, 0o755)
    ctx.ok("spec", "--bundle", bundle, root=False)
    h.build_rootfs(bundle / "rootfs")
    config = json.loads((bundle / "config.json").read_text())
    cid = ctx.new_id()
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "echo spec-ok"]
    config.setdefault("linux", {})["cgroupsPath"] = h.cgroup_path_for(cid)
    ctx.track_cgroup(h.cgroup_path_for(cid))
    (bundle / "config.json").write_text(json.dumps(config))
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    assert res.stdout.strip() == "spec-ok"


def test_features(ctx):
    out = ctx.ok("features").stdout
    feats = json.loads(out)
    assert feats["ociVersionMin"].startswith("1.")
    assert feats["ociVersionMax"].startswith("1.")
    if "linux" in feats and "namespaces" in feats["linux"]:
        assert {"pid", "network", "mount"} <= set(feats["linux"]["namespaces"])


def test_version(ctx):
    res = ctx.ok("--version", root=False)
    assert res.stdout.strip()
    assert "Traceback" not in res.stderr


def test_debug_and_log_flags_accepted(ctx):
    log = ctx.tmp / "runtime.log"
    cid, bundle = ctx.bundle(sh("echo hi"))
    res = ctx.cli("--debug", "--log", log, "--log-format", "text", "run", "--bundle",
                  bundle, cid)
    assert res.returncode == 0, res.describe()
    assert res.stdout == "hi\n"


def test_log_json_errors(ctx):
    log = ctx.tmp / "runtime.log"
    bundle = ctx.tmp / "empty-bundle"
    bundle.mkdir()
    cid = ctx.new_id()
    res = ctx.cli("--log", log, "--log-format", "json", "create", "--bundle", bundle, cid)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    entries = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    errors = [e for e in entries if e.get("level") == "error"]
    assert errors, log.read_text()
    assert errors[-1]["msg"]
    assert errors[-1]["time"]


# ==========================================================================
# fds and console
# ==========================================================================

def test_preserve_fds(ctx):
    out_path = ctx.tmp / "fd3.out"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        cid, bundle = ctx.bundle(sh("echo via-fd3 >&3"))
        res = ctx.cli("run", "--preserve-fds", "1", "--bundle", bundle, cid,
                      preexec_fn=lambda: os.dup2(fd, 3), close_fds=False)
    finally:
        os.close(fd)
    assert res.returncode == 0, res.describe()
    assert out_path.read_text() == "via-fd3\n"


def test_fd3_not_passed_without_preserve_fds(ctx):
    out_path = ctx.tmp / "fd3.out"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        cid, bundle = ctx.bundle(sh("echo via-fd3 >&3 || echo closed"))
        res = ctx.cli("run", "--bundle", bundle, cid,
                      preexec_fn=lambda: os.dup2(fd, 3), close_fds=False)
    finally:
        os.close(fd)
    assert res.returncode == 0, res.describe()
    assert "closed" in res.stdout
    assert out_path.read_text() == ""


def test_console_socket(ctx):
    recv = h.ConsoleReceiver(ctx.tmp / "console.sock")
    try:
        cid, bundle = ctx.bundle(sh("echo hello; tty; [ -t 0 ] && echo stdin-is-tty"),
                                 terminal=True)
        ctx.ok("create", "--console-socket", recv.path, "--bundle", bundle, cid)
        master = recv.get_master()
        assert os.isatty(master)
        ctx.ok("start", cid)
        out = h.read_pty(master, ["hello", "stdin-is-tty"])
        assert "hello" in out, out
        assert "/dev/pts/" in out or "/dev/console" in out, out
        assert "stdin-is-tty" in out, out
        ctx.wait_status(cid, "stopped")
        ctx.ok("delete", cid)
    finally:
        recv.close()
