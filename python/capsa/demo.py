"""The main job, end to end: start a real registry (Debian's docker-registry)
on loopback, make a busybox image from the host's static busybox, push it,
pull it into a fresh store and run containers from it with `capsa`; then run
the same busybox as an OCI bundle through `capsa-runtime` (the runc command
contract) and through the in-process Python API.

    python -m capsa.demo
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from capsa.binaries import native_binary

BUSYBOX = "/bin/busybox"
REGISTRY = "/usr/bin/docker-registry"


def busybox_rootfs(dest: Path) -> Path:
    """/bin/busybox plus a relative symlink per applet (`busybox --install -s`
    makes absolute links to the host path, which break inside the container)."""
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if applet != "busybox" and not link.is_symlink():
            os.symlink("busybox", link)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    return dest


def busybox_bundle(dest: Path, args: list[str], **process) -> Path:
    """An OCI bundle: a busybox rootfs and `capsa-runtime spec`'s config running `args`."""
    busybox_rootfs(dest / "rootfs")
    (dest / "config.json").unlink(missing_ok=True)
    subprocess.run([native_binary("capsa-runtime"), "spec", "--bundle", str(dest)], check=True)
    spec = json.loads((dest / "config.json").read_text())
    spec["process"].update(terminal=False, args=list(args), **process)
    (dest / "config.json").write_text(json.dumps(spec, indent=2))
    return dest


def start_registry(workdir: Path) -> tuple[subprocess.Popen, str]:
    """docker-registry on 127.0.0.1:<free port> with its storage in workdir."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = workdir / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("docker-registry did not start")


def capsa(*args: str, root: Path) -> None:
    print("$ capsa " + shlex.join(args), flush=True)
    cli = shutil.which("capsa") or str(Path(sys.executable).with_name("capsa"))
    subprocess.run([cli, "--root", str(root), *args], check=True)


def image_demo(tmp: Path) -> None:
    """Registry round trip, then containers from the pulled image."""
    proc, host = start_registry(tmp)
    try:
        tarball = tmp / "busybox.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(busybox_rootfs(tmp / "image-rootfs"), arcname=".")
        image = f"{host}/demo/busybox:latest"
        store = tmp / "store"
        capsa("import", "--change", "CMD [\"sh\"]", str(tarball), image, root=store)
        capsa("push", image, root=store)
        capsa("rmi", image, root=store)
        capsa("pull", image, root=store)
        capsa("images", root=store)
        capsa("run", "--rm", "--name", "hello", image, "sh", "-c",
              'echo "hello from $(hostname), PID $$, root: overlay of the image"', root=store)
        capsa("run", "-d", "--name", "ticker", image, "sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done; sleep 30", root=store)
        time.sleep(1)
        capsa("ps", root=store)
        capsa("logs", "ticker", root=store)
        capsa("rm", "-f", "ticker", root=store)
        print()
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    for need, package in ((BUSYBOX, "busybox-static"), (REGISTRY, "docker-registry")):
        if not Path(need).exists():
            print(f"{need} is missing: apt-get install {package}", file=sys.stderr)
            return 1
    from capsa.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="capsa-demo-") as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        image_demo(tmp)
        script = 'echo "hello from $(hostname), I am PID $$, my network: $(ls /sys/class/net)"; exit 3'
        bundle = busybox_bundle(tmp / "bundle", ["sh", "-c", script])
        root = tmp / "state"

        print("$ capsa-runtime run demo  (the runc command contract)")
        runtime = native_binary("capsa-runtime")
        t = time.perf_counter()
        code = subprocess.run([runtime, "--root", str(root), "run", "--bundle", str(bundle), "demo"]).returncode
        print(f"  exit code {code} (the container's), {1000 * (time.perf_counter() - t):.1f} ms for the whole command\n")

        print("Python API, in-process: create -> state -> start -> wait -> delete")
        rt = Runtime(root)
        pid = rt.create("demo-api", bundle)
        print(f"  created, init pid {pid}, status {rt.state('demo-api')['status']}")
        rt.start("demo-api")
        code = rt.wait("demo-api")
        print(f"  exit code {code}, status {rt.state('demo-api')['status']}")
        rt.delete("demo-api")

        n = 50
        quiet = busybox_bundle(tmp / "quiet", ["true"])
        t = time.perf_counter()
        for i in range(n):
            rt.run(f"loop-{i}", quiet)
        per = 1000 * (time.perf_counter() - t) / n
        print(f"\n{n} containers started and removed in-process: {per:.2f} ms each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
