#!/bin/bash
# runc-bats.sh - run runc's own bats integration suite against an OCI runtime.
#
# Usage: runc-bats.sh [RUNTIME] [FILE.bats ...]
#   RUNTIME   runtime binary (default /usr/sbin/runc), passed to the suite as $RUNC
#   FILE.bats test files from runc-src/tests/integration (default: all but
#             the excluded ones, see EXCLUDED below)
# Environment:
#   FILE_TIMEOUT  per-file timeout in seconds (default 300)
#   TEST_TIMEOUT  per-test timeout (BATS_TEST_TIMEOUT) used only when a file
#                 hit FILE_TIMEOUT and is rerun (default 60). Not used on the
#                 first pass: the bats watchdog breaks tests that do a bare
#                 "wait" (events.bats).
#   BATS_ARGS     extra arguments for bats (e.g. "--filter 'runc run'")
#
# Needs: $RUNC_SRC (a runc v1.1.5 worktree, kept outside the project; `make conformance`). It never
# builds runc or anything from runc-src. Files it writes: /tmp/runc-bats/**,
# and inside $RUNC_SRC: tests/integration/testdata/{busybox,debian}-amd64.tar.xz
# plus contrib/cmd/{recvtty/recvtty,seccompagent/seccompagent} (Python
# stand-ins for runc's Go test helpers).
# The only persistent system-wide change is "apt-get install bats gawk jq"
# when missing. Running containers creates transient cgroups, mounts,
# namespaces and (cgroups.bats) a loop device; the tests remove them, and this
# script rmdirs test cgroups they leave behind (see cleanup_cgroups).
# The debian image (hooks.bats only) is made once with debootstrap from
# this machine's apt mirror into /tmp. Note: seccomp.bats/dev.bats/hooks.bats themselves
# compile small C programs (testdata/*.c) with gcc into the test bundle.

set -u -o pipefail

PEER=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
SRC=${RUNC_SRC:-$PEER/runc-src}
INT=$SRC/tests/integration
WORK=/tmp/runc-bats
FILE_TIMEOUT=${FILE_TIMEOUT:-300}
TEST_TIMEOUT=${TEST_TIMEOUT:-60}
TAG=v1.1.5
# checkpoint.bats writes /etc/criu/default.conf and /run/netns/* (criu is
# installed here, so it would really run) -> never run it from this script.
EXCLUDED="checkpoint.bats"

RUNTIME=${1:-/usr/sbin/runc}
[ $# -gt 0 ] && shift
RUNTIME=$(readlink -f "$RUNTIME" 2>/dev/null || echo "$RUNTIME")

die() { echo "runc-bats: $*" >&2; exit 2; }
log() { echo "runc-bats: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (the suite tests root containers)"
[ -x "$RUNTIME" ] || die "runtime '$RUNTIME' is not an executable file"

if [ ! -f "$INT/helpers.bash" ]; then
	cat >&2 <<-EOF
		runc-bats: $SRC is missing: set RUNC_SRC to a checkout of runc at tag $TAG (make conformance RUNC_SRC=...).
	EOF
	exit 2
fi

# ---------------------------------------------------------------- packages --
missing=()
command -v bats >/dev/null || missing+=(bats)
command -v gawk >/dev/null || missing+=(gawk) # helpers.bash uses gawk for cgroup v1 paths
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]} with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
fi
for t in bats gawk jq gcc busybox timeout; do
	command -v "$t" >/dev/null || log "warning: '$t' not found; some tests will fail"
done

mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/t"

# ------------------------------------------------ "go env GOARCH" stand-in --
# get-images.sh runs "go env GOARCH" only to pick the image file name.
cat >"$WORK/bin/go" <<'EOF'
#!/bin/sh
# stand-in for "go env GOARCH" used by runc's tests/integration/get-images.sh
if [ "$1" = env ] && [ "$2" = GOARCH ]; then
	case "$(uname -m)" in
	x86_64) echo amd64 ;; aarch64) echo arm64 ;; i?86) echo 386 ;; *) uname -m ;;
	esac
	exit 0
fi
echo "go stand-in: only 'go env GOARCH' is supported" >&2
exit 1
EOF
chmod 755 "$WORK/bin/go"
ARCH=$(PATH="$WORK/bin:$PATH" go env GOARCH)
BUSYBOX_TB=$INT/testdata/busybox-$ARCH.tar.xz
DEBIAN_TB=$INT/testdata/debian-$ARCH.tar.xz

# ------------------------------------------------------ recvtty stand-in ---
# helpers.bash hard-codes $SRC/contrib/cmd/recvtty/recvtty (a Go program we
# must not build). This is an independent Python implementation of its CLI:
#   recvtty [--mode single|null] [--pid-file F] [--no-stdin] SOCKET
RECVTTY=$SRC/contrib/cmd/recvtty/recvtty
mkdir -p "$(dirname "$RECVTTY")"
cat >"$RECVTTY.new" <<'EOF'
#!/usr/bin/python3 -IS
# Stand-in for runc's contrib/cmd/recvtty (written for runc-bats.sh; not built
# from runc sources). Receives a pty master over a unix socket (SCM_RIGHTS).
import argparse, os, socket, sys, termios, threading

def recv_master(conn):
    _, fds, _, _ = socket.recv_fds(conn, 4096, 16)
    if not fds:
        raise RuntimeError("no file descriptor received")
    for fd in fds[1:]:
        os.close(fd)
    return fds[0]

def drain(fd, out):
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        if out is not None:
            try:
                os.write(out, data)
            except OSError:
                break

def handle_null(path):
    ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ln.bind(path)
    ln.listen(128)
    while True:
        conn, _ = ln.accept()
        def one(conn=conn):
            try:
                fd = recv_master(conn)
            except Exception:
                conn.close()
                return
            conn.close()
            drain(fd, None)
            os.close(fd)
        threading.Thread(target=one, daemon=True).start()

def handle_single(path, no_stdin):
    ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ln.bind(path)
    ln.listen(1)
    conn, _ = ln.accept()
    ln.close()
    try:
        os.unlink(path)
    except OSError:
        pass
    fd = recv_master(conn)
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.ONLCR
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    if not no_stdin:
        threading.Thread(target=drain, args=(0, fd), daemon=True).start()
    drain(fd, 1)
    conn.close()

def main():
    p = argparse.ArgumentParser(prog="recvtty")
    p.add_argument("-m", "--mode", default="single")
    p.add_argument("--pid-file", default="")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("socket")
    a = p.parse_args()
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write("%d\n" % os.getpid())
    if a.mode == "null":
        handle_null(a.socket)
    elif a.mode == "single":
        handle_single(a.socket, a.no_stdin)
    else:
        sys.exit("[recvtty] fatal error: need to select a valid mode: " + a.mode)

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except Exception as e:
        sys.exit("[recvtty] fatal error: %s" % e)
EOF
chmod 755 "$RECVTTY.new" && mv -f "$RECVTTY.new" "$RECVTTY"

# --------------------------------------------------- seccompagent stand-in --
# helpers.bash hard-codes $SRC/contrib/cmd/seccompagent/seccompagent (Go, used
# by seccomp-notify.bats). Independent Python implementation of the same CLI.
AGENT=$SRC/contrib/cmd/seccompagent/seccompagent
mkdir -p "$(dirname "$AGENT")"
cat >"$AGENT.new" <<'EOF'
#!/usr/bin/python3 -IS
# Stand-in for runc's contrib/cmd/seccompagent (written for runc-bats.sh; not
# built from runc sources). Same CLI and behaviour as the Go test agent:
#   mkdir(path)            -> mkdir("<path>-<metadata>") in the container, return 0
#   chmod/fchmod/fchmodat  -> fail with ENOMEDIUM
#   anything else          -> SECCOMP_USER_NOTIF_FLAG_CONTINUE
import ctypes, errno, json, os, select, socket, struct, sys, threading

NOTIF_RECV = 0xC0502100      # _IOWR('!', 0, struct seccomp_notif)      (80 bytes)
NOTIF_SEND = 0xC0182101      # _IOWR('!', 1, struct seccomp_notif_resp) (24 bytes)
NOTIF_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)
FLAG_CONTINUE = 1
AUDIT_ARCH_X86_64 = 0xC000003E
SYS_X86_64 = {83: "mkdir", 90: "chmod", 91: "fchmod", 268: "fchmodat"}

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]

def log(msg):
    sys.stderr.write("[seccompagent] %s\n" % msg)
    sys.stderr.flush()

def ioctl(fd, req, buf):
    if libc.ioctl(fd, req, ctypes.addressof(buf)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def read_arg_string(pid, addr):
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as f:
        for size in (4096, 4096 - (addr % 4096)):
            try:
                data = os.pread(f.fileno(), size, addr)
                break
            except OSError:
                continue
        else:
            raise OSError(errno.EFAULT, "cannot read /proc/%d/mem" % pid)
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

def mkdir_for_container(pid, name, mode, metadata):
    new = "%s-%s" % (name, metadata)
    root = "/proc/%d/%s/" % (pid, "root" if name.startswith("/") else "cwd")
    rel = os.path.normpath("/" + new).lstrip("/")  # keep it inside root (lexically)
    os.mkdir(root + rel, mode & 0o7777)

def handler(fd, metadata):
    req = ctypes.create_string_buffer(80)
    resp = ctypes.create_string_buffer(24)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while True:
            ev = poller.poll()
            if ev and not (ev[0][1] & select.POLLIN) and (ev[0][1] & (select.POLLHUP | select.POLLERR)):
                return  # all processes using the filter are gone
            ctypes.memset(req, 0, 80)
            try:
                ioctl(fd, NOTIF_RECV, req)
            except OSError as e:
                if e.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                    continue
                log("NOTIF_RECV: %s" % e)
                return
            nid, pid, _flags, nr, arch, _ip = struct.unpack_from("=QIIiIQ", req.raw, 0)
            args = struct.unpack_from("=6Q", req.raw, 32)
            name = SYS_X86_64.get(nr) if arch == AUDIT_ARCH_X86_64 else None
            val, err, flags = 0, 0, FLAG_CONTINUE
            if name == "mkdir":
                flags = 0
                try:
                    fname = read_arg_string(pid, args[0])
                    idbuf = ctypes.create_string_buffer(struct.pack("=Q", nid), 8)
                    ioctl(fd, NOTIF_ID_VALID, idbuf)  # TOCTOU check
                    mkdir_for_container(pid, fname, args[1], metadata)
                except OSError as e:
                    log("mkdir: %s" % e)
                    val, err = -1, -errno.ENOSYS
            elif name in ("chmod", "fchmod", "fchmodat"):
                val, err, flags = -1, -errno.ENOMEDIUM, 0
            struct.pack_into("=QqiI", resp, 0, nid, val, err, flags)
            try:
                ioctl(fd, NOTIF_SEND, resp)
            except OSError as e:
                log("NOTIF_SEND: %s" % e)
    finally:
        os.close(fd)

def handle_conn(conn):
    msg, fds, _, _ = socket.recv_fds(conn, 4096, 16)
    conn.close()
    try:
        state = json.loads(msg)
        names = state.get("fds") or []
        if names.count("seccompFd") != 1 or names.index("seccompFd") >= len(fds):
            raise ValueError("seccomp fd not found or malformed containerProcessState.Fds")
        idx = names.index("seccompFd")
    except Exception as e:
        for fd in fds:
            os.close(fd)
        log("bad message: %s" % e)
        return
    for i, fd in enumerate(fds):
        if i != idx:
            os.close(fd)
    metadata = os.path.basename(state.get("metadata") or "")
    if "/" in metadata:
        metadata = "agent-generated-suffix"
    threading.Thread(target=handler, args=(fds[idx], metadata), daemon=True).start()

def main():
    sockfile, pidfile = "/run/seccomp-agent.socket", ""
    argv = sys.argv[1:]
    while argv:
        a = argv.pop(0)
        key, eq, val = a.lstrip("-").partition("=")
        if key in ("socketfile", "pid-file"):
            if not eq:
                val = argv.pop(0)
            if key == "socketfile":
                sockfile = val
            else:
                pidfile = val
        else:
            sys.exit("usage: seccompagent -socketfile=PATH [-pid-file PATH]")
    try:
        os.unlink(sockfile)
    except FileNotFoundError:
        pass
    if pidfile:
        with open(pidfile, "w") as f:
            f.write("%d" % os.getpid())
    ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ln.bind(sockfile)
    ln.listen(128)
    while True:
        conn, _ = ln.accept()
        try:
            handle_conn(conn)
        except Exception as e:
            log("error receiving seccomp fd: %s" % e)

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
EOF
chmod 755 "$AGENT.new" && mv -f "$AGENT.new" "$AGENT"

# ----------------------------------------------------------- busybox image --
build_busybox() {
	local r=$WORK/rootfs-busybox a
	command -v busybox >/dev/null || die "busybox not found (apt-get install busybox-static)"
	command -v file >/dev/null && file -L "$(command -v busybox)" | grep -q dynamic &&
		log "warning: busybox is dynamically linked; install busybox-static"
	rm -rf "$r"
	# Same layout as docker-library busybox (bin dev etc home lib root tmp usr var).
	mkdir -p "$r"/{bin,dev,etc/network/{if-down.d,if-post-down.d,if-pre-up.d,if-up.d},home,lib,root,tmp,usr/sbin,var/spool/mail,var/www}
	chmod 700 "$r/root"
	chmod 1777 "$r/tmp"
	cp "$(readlink -f "$(command -v busybox)")" "$r/bin/busybox"
	chmod 755 "$r/bin/busybox"
	# all applets as hard links in /bin, like the upstream image
	for a in $("$r/bin/busybox" --list); do
		[ "$a" = busybox ] || ln -f "$r/bin/busybox" "$r/bin/$a"
	done
	cat >"$r/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		daemon:x:1:1:daemon:/usr/sbin:/bin/false
		bin:x:2:2:bin:/bin:/bin/false
		sys:x:3:3:sys:/dev:/bin/false
		sync:x:4:100:sync:/bin:/bin/sync
		mail:x:8:8:mail:/var/spool/mail:/bin/false
		www-data:x:33:33:www-data:/var/www:/bin/false
		operator:x:37:37:Operator:/var:/bin/false
		nobody:x:65534:65534:nobody:/home:/bin/false
	EOF
	cat >"$r/etc/group" <<-'EOF'
		root:x:0:
		daemon:x:1:
		bin:x:2:
		sys:x:3:
		adm:x:4:
		tty:x:5:
		disk:x:6:
		lp:x:7:
		mail:x:8:
		kmem:x:9:
		wheel:x:10:root
		cdrom:x:11:
		dialout:x:18:
		floppy:x:19:
		video:x:28:
		audio:x:29:
		tape:x:32:
		www-data:x:33:
		operator:x:37:
		utmp:x:43:
		plugdev:x:46:
		staff:x:50:
		lock:x:54:
		netdev:x:82:
		users:x:100:
		nogroup:x:65534:
	EOF
	sed -e 's/^\([^:]*\):.*/\1:*::::::/' "$r/etc/passwd" >"$r/etc/shadow"
	chmod 600 "$r/etc/shadow"
	printf 'hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\nshadow: files\n' >"$r/etc/nsswitch.conf"
	tar --numeric-owner -C "$r" -cJf "$BUSYBOX_TB.tmp" . && mv -f "$BUSYBOX_TB.tmp" "$BUSYBOX_TB"
	rm -rf "$r"
}
if [ ! -s "$BUSYBOX_TB" ]; then
	log "building busybox rootfs -> $BUSYBOX_TB"
	build_busybox || die "could not build the busybox rootfs"
fi

# ------------------------------------------------------------ debian image --
# Only hooks.bats uses it. get-images.sh would curl it from GitHub if absent,
# so always provide a file: debootstrap (bookworm minbase; upstream uses buster
# slim) when possible, else a placeholder copy of busybox (hooks.bats then fails).
DEB_PLACEHOLDER=$INT/testdata/.debian-is-placeholder
build_debian() {
	local r=$WORK/rootfs-debian mirror
	rm -rf "$r"
	# The apt mirror this machine already uses (deb822 .sources or sources.list).
	mirror=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null)
	if command -v debootstrap >/dev/null &&
		[ -n "$mirror" ] && debootstrap --variant=minbase bookworm "$r" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
		rm -rf "$r"/usr/share/{doc,man,info,locale} "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/*
		tar --numeric-owner -C "$r" -cf - . | xz -T0 -3 >"$DEBIAN_TB.tmp" &&
			mv -f "$DEBIAN_TB.tmp" "$DEBIAN_TB" && rm -f "$DEB_PLACEHOLDER"
	else
		log "warning: debootstrap failed (see $WORK/debootstrap.log); using busybox as debian placeholder"
		cp "$BUSYBOX_TB" "$DEBIAN_TB" && touch "$DEB_PLACEHOLDER"
	fi
	# debootstrap mounts proc/sys in the target; make sure nothing is left
	grep -F " $r/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r umount -l 2>/dev/null
	rm -rf --one-file-system "$r"
}
if [ ! -s "$DEBIAN_TB" ] || [ -e "$DEB_PLACEHOLDER" ]; then
	log "building debian rootfs -> $DEBIAN_TB"
	build_debian
fi

# ------------------------------------------------------------- file list ---
files=()
if [ $# -gt 0 ]; then
	for f in "$@"; do
		f=$(basename "$f")
		[[ $f == *.bats ]] || f=$f.bats
		[ -f "$INT/$f" ] || die "no such test file: $INT/$f"
		[[ " $EXCLUDED " == *" $f "* ]] && die "$f is excluded (it modifies the host outside /tmp)"
		files+=("$f")
	done
else
	for f in "$INT"/*.bats; do
		f=$(basename "$f")
		[[ " $EXCLUDED " == *" $f "* ]] && continue
		files+=("$f")
	done
fi

# ------------------------------------------------------------------ run ----
name=$(basename "$RUNTIME")
LOGDIR=$WORK/logs/$name
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"

cleanup_tmp() { # $1: per-file TMPDIR. Remove leftover containers and mounts.
	local d=$1 st
	while read -r st; do
		for ct in $("$RUNTIME" --root "$st" list -q 2>/dev/null); do
			"$RUNTIME" --root "$st" delete -f "$ct" >/dev/null 2>&1
		done
	done < <(find "$d" -maxdepth 4 -type d -name state 2>/dev/null)
	gawk -v d="$d/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		xargs -r -n1 umount -l 2>/dev/null
	rm -rf --one-file-system "$d"
}

# Cgroups left behind by failed tests (e.g. the test-made cgroup of "update rt
# period and runtime" keeps cpu.rt_runtime_us reserved and makes the next run
# fail). Only directories directly under /sys/fs/cgroup/<hierarchy>/ with the
# suite's names are considered; pre-existing ones are only rmdir'ed when named
# runc-cgroups-integration-test, and processes are killed only in cgroups that
# appeared during this run.
CG_RE='^(runc-cgroups-integration-test|test|test_[A-Za-z0-9_]+|testbusyboxdelete|ct[0-9]+)$'
cg_candidates() {
	find /sys/fs/cgroup/*/ -mindepth 1 -maxdepth 1 -type d 2>/dev/null |
		gawk -F/ -v re="$CG_RE" '$NF ~ re'
}
CG_BEFORE=$(cg_candidates)
# The suite (and runtimes) mkdir paths for controllers this host does not
# mount (hugetlb, net_cls, perf_event...): plain dirs on /sys/fs/cgroup's tmpfs.
plain_cgroup_dirs() {
	local d
	for d in /sys/fs/cgroup/*/; do
		d=${d%/}
		[ -L "$d" ] || mountpoint -q "$d" || echo "$d"
	done
}
PLAIN_BEFORE=$(plain_cgroup_dirs)
cleanup_cgroups() {
	local d sub pid
	while read -r d; do
		[ -n "$d" ] || continue
		if grep -qxF "$d" <<<"$CG_BEFORE"; then
			[ "$(basename "$d")" = runc-cgroups-integration-test ] || continue
		else
			while read -r sub; do
				[ -w "$sub/freezer.state" ] && echo THAWED >"$sub/freezer.state" 2>/dev/null
				[ -w "$sub/cgroup.freeze" ] && echo 0 >"$sub/cgroup.freeze" 2>/dev/null
				for pid in $(cat "$sub/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
			done < <(find "$d" -type d 2>/dev/null)
			sleep 0.2
		fi
		find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
	done < <(cg_candidates)
	while read -r d; do
		[ -n "$d" ] && ! grep -qxF "$d" <<<"$PLAIN_BEFORE" && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
	done < <(plain_cgroup_dirs)
}
cleanup_cgroups

log "runtime: $RUNTIME ($("$RUNTIME" --version 2>/dev/null | head -1))"
log "suite:   $INT ($(git -C "$SRC" describe --tags 2>/dev/null || echo unknown))"
log "logs:    $LOGDIR"
T0=$(date +%s)
TP=0 TF=0 TS=0
summary=$LOGDIR/summary.txt
printf '%-28s %6s %6s %7s  %s\n' FILE PASSED FAILED SKIPPED NOTE | tee "$summary"
run_file() { # $1: file, $2: BATS_TEST_TIMEOUT ("" = none), $3: TAP output
	local f=$1 tdir=$WORK/t/$name-${1%.bats} rc
	cleanup_tmp "$tdir"
	mkdir -p "$tdir"
	# Like runc's CI, run bats under script(1) so that it has a controlling
	# terminal (foreground "run" with terminal=true opens /dev/tty).
	(cd "$INT" && env -u RUNC_USE_SYSTEMD -u ROOTLESS_FEATURES -u BATS_TEST_TIMEOUT \
		PATH="$WORK/bin:$PATH" TMPDIR="$tdir" RUNC="$RUNTIME" SHELL=/bin/bash \
		${2:+BATS_TEST_TIMEOUT="$2"} \
		timeout -k 15 "$FILE_TIMEOUT" script -q -e -c "bats --tap ${BATS_ARGS:-} $f" /dev/null \
		</dev/null 2>&1) | tr -d '\r' >"$3"
	rc=$?
	cleanup_tmp "$tdir"
	cleanup_cgroups
	return $rc
}

for f in "${files[@]}"; do
	tap=$LOGDIR/${f%.bats}.tap
	t1=$(date +%s)
	run_file "$f" "" "$tap"
	rc=$?
	note=""
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		# A hang: rerun with a per-test timeout so that the other tests count.
		mv -f "$tap" "$tap.file-timeout"
		run_file "$f" "$TEST_TIMEOUT" "$tap"
		rc=$?
		note="file-timeout->rerun(test-timeout=${TEST_TIMEOUT}s,$(grep -c '# timeout after' "$tap")-timed-out)"
		if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note="$note TIMEOUT"; fi
	fi
	t2=$(date +%s)
	plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$tap" | head -1)
	s=$(grep -cE '^ok [0-9]+ .*# [Ss][Kk][Ii][Pp]' "$tap")
	p=$(($(grep -cE '^ok [0-9]+' "$tap") - s))
	fl=$(grep -cE '^not ok [0-9]+' "$tap")
	note="$((t2 - t1))s $note"
	if [ -z "$plan" ]; then
		note="$note bats-error(rc=$rc)"
		fl=$((fl + 1))
	elif [ $((p + fl + s)) -lt "$plan" ]; then
		note="$note $((plan - p - fl - s))-not-run(counted-failed)"
		fl=$((plan - p - s))
	fi
	TP=$((TP + p)) TF=$((TF + fl)) TS=$((TS + s))
	printf '%-28s %6d %6d %7d  %s\n' "$f" "$p" "$fl" "$s" "$note" | tee -a "$summary"
done
T3=$(date +%s)
echo "total time: $((T3 - T0))s; runtime: $RUNTIME; per-file TAP logs: $LOGDIR" | tee -a "$summary"
echo "$TP passed, $TF failed, $TS skipped" | tee -a "$summary"
[ "$TF" -eq 0 ]
