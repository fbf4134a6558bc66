"""A real Debian image with a real service: a debootstrapped bookworm with
nginx (the bench helpers' cached tree, benches/extract.py), imported into
the store once per session; `capsa run -d` serves HTTP on the host network."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import image_fixtures as imgs


BENCHES = Path(__file__).resolve().parent.parent / "benches"


@pytest.fixture(scope="session")
def debian_root(base_dir):
    """A store holding `debian-nginx:test`, made from debootstrap (cached across sessions under /var/tmp/capsa-bench)."""
    sys.path.insert(0, str(BENCHES))
    try:
        import extract
    finally:
        sys.path.remove(str(BENCHES))
    layer, source = extract.build_layer(extract.DEFAULT_CACHE)
    if not source.startswith("debootstrap"):
        pytest.skip(f"no Debian image: {source}")
    from capsa.image.importer import import_tarball
    from capsa.image.store import Store as ImageStore

    root = base_dir / "capsa-debian-root"
    root.mkdir()
    os.chmod(root, 0o755)
    store = ImageStore.open(root)
    try:
        with open(layer, "rb") as f:
            import_tarball(store, f, tags=["docker.io/library/debian-nginx:test"],
                           changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    'CMD ["bash"]'])
    finally:
        store.close()
    return root


@pytest.fixture
def capsa(debian_root):
    with imgs.capsa_cli(debian_root, must_remove_own=True) as run:
        yield run


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_debian_userland_runs(capsa):
    r = capsa("run", "--rm", "debian-nginx:test", "sh", "-c", ". /etc/os-release; echo $ID $VERSION_CODENAME; id -un nobody")
    assert (r.returncode, r.stdout) == (0, "debian bookworm\nnobody\n"), r.stderr


def test_nginx_serves_on_the_host_network(capsa):
    with socket.socket() as s:  # a free high port: the host's port 80 is not ours
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"nginx-{uuid.uuid4().hex[:6]}"
    conf = ("sed -i -e 's/listen 80 default_server;/listen 127.0.0.1:%d default_server;/' "
            "-e '/listen \\[::\\]:80/d' /etc/nginx/sites-enabled/default && "
            "echo capsa-nginx-ok > /var/www/html/index.html && exec nginx -g 'daemon off;'") % port
    r = capsa("run", "-d", "--name", name, "--network", "host", "debian-nginx:test", "sh", "-c", conf)
    assert r.returncode == 0, r.stderr
    body, deadline = None, time.monotonic() + 20
    while body is None and time.monotonic() < deadline:
        try:
            body = _get(f"http://127.0.0.1:{port}/")
        except OSError:
            time.sleep(0.1)
    assert body == "capsa-nginx-ok\n", capsa("logs", name).stderr
    ps = capsa("ps", "--format", "json").stdout
    assert name in ps and "running" in ps.lower()
    top = capsa("top", name).stdout
    assert "nginx: master process" in top and "nginx: worker process" in top
    assert capsa("stop", name).returncode == 0
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/")
    assert capsa("rm", name).returncode == 0
    assert name not in capsa("ps", "-a").stdout
    # The image is unchanged: a new container still has the stock config.
    r = capsa("run", "--rm", "debian-nginx:test", "grep", "-c", "listen 80 default_server", "/etc/nginx/sites-available/default")
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
