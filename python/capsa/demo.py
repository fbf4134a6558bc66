"""The main job, end to end: build a busybox OCI bundle from the host's
static busybox, then run containers from it through `capsa-runtime` (the
runc command contract) and through the in-process Python API.

    python -m capsa.demo
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSYBOX = "/bin/busybox"


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
    from capsa.runtime.templates import default_spec

    busybox_rootfs(dest / "rootfs")
    spec = default_spec()
    spec["process"].update(terminal=False, args=list(args), **process)
    (dest / "config.json").write_text(json.dumps(spec, indent=2))
    return dest


def main() -> int:
    if not Path(BUSYBOX).exists():
        print(f"{BUSYBOX} is missing: apt-get install busybox-static", file=sys.stderr)
        return 1
    from capsa.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="capsa-demo-") as tmp:
        tmp = Path(tmp)
        script = 'echo "hello from $(hostname), I am PID $$, my network: $(ls /sys/class/net)"; exit 3'
        bundle = busybox_bundle(tmp / "bundle", ["sh", "-c", script])
        root = tmp / "state"

        print("$ capsa-runtime run demo  (the runc command contract)")
        runtime = shutil.which("capsa-runtime") or str(Path(sys.executable).with_name("capsa-runtime"))
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
