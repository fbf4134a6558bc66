"""Registry credentials in Docker's config file (`$DOCKER_CONFIG/config.json`
or `~/.docker/config.json`), read and written in Docker's own format so that
`docker login` and `capsa login` share them: base64 `auth` entries under
`auths`, or a credential helper (`credHelpers`, `credsStore`) speaking
Docker's docker-credential-* protocol."""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from capsa.errors import CapsaError
from capsa.image.reference import DEFAULT_REGISTRY

# Docker keys Docker Hub's credentials by its old v1 index URL.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
# What a credential helper's Username is when Secret is an identity token.
_TOKEN_USERNAME = "<token>"
HELPER_TIMEOUT = 60
_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}


class CredentialsError(CapsaError):
    pass


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""     # an OAuth2 refresh token, used instead of a password

    def __repr__(self) -> str:   # never print secrets in a traceback or log
        return f"Credentials(username={self.username!r})"


def config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _hostname(key: str) -> str:
    """Docker's ConvertToHostname: `https://host/v1/` -> `host`."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
    return key.split("/", 1)[0]


def _canonical(registry: str) -> str:
    host = _hostname(registry)
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_HOSTS else host


def _store_key(registry: str) -> str:
    canonical = _canonical(registry)
    return DOCKER_HUB_KEY if canonical == DEFAULT_REGISTRY else canonical


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CredentialsError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise CredentialsError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path} is not a JSON object")
    return data


def _write(path: Path, data: dict) -> None:
    """Atomically, mode 0600: a crash leaves the old file or the new one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _decode(entry: dict, path: Path, key: str) -> Credentials | None:
    username, password = entry.get("username", ""), entry.get("password", "")
    if entry.get("auth"):
        try:
            username, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise CredentialsError(f"{path}: the auth entry for {key} is not base64 of user:password")
    token = entry.get("identitytoken", "")
    if not (username or password or token):
        return None
    return Credentials(username, password, token)


def _helper(data: dict, registry: str) -> str | None:
    """The credential helper Docker would use for `registry`, if any."""
    wanted = _canonical(registry)
    for key, name in (data.get("credHelpers") or {}).items():
        if _canonical(key) == wanted and name:
            return name
    return data.get("credsStore") or None


def _run_helper(name: str, action: str, payload: str, path: Path) -> str | None:
    """docker-credential-NAME ACTION with payload on stdin; None when the
    helper says it has no such credentials."""
    exe = f"docker-credential-{name}"
    try:
        done = subprocess.run([exe, action], input=payload, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT)
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {exe} (named in {path}) is not installed") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {exe} {action} did not answer "
                               f"in {HELPER_TIMEOUT} s") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip()
        if "credentials not found" in said.lower():
            return None
        last = said.splitlines()[-1] if said else f"exit status {done.returncode}"
        raise CredentialsError(f"credential helper {exe} {action} failed: {last}")
    return done.stdout


def get_credentials(registry: str, path: Path | None = None) -> Credentials | None:
    """The stored credentials for `registry` (a host, or docker.io), if any.
    A helper the config names but that is not installed means anonymous."""
    path = path or config_path()
    data = _read(path)
    helper = _helper(data, registry)
    if helper:
        try:
            out = _run_helper(helper, "get", _store_key(registry), path)
        except CredentialsError:
            out = None
        if out:
            try:
                answer = json.loads(out)
                username, secret = answer.get("Username", ""), answer.get("Secret", "")
            except (ValueError, AttributeError):
                raise CredentialsError(f"credential helper docker-credential-{helper} "
                                       "answered something that is not JSON") from None
            if username == _TOKEN_USERNAME:
                return Credentials(identity_token=secret)
            if username or secret:
                return Credentials(username, secret)
    auths = data.get("auths") or {}
    wanted = _canonical(registry)
    # An exact key first, then any key naming the same host (Docker does the same).
    for key in [k for k in auths if k == registry] + [k for k in auths if k != registry]:
        if _canonical(key) == wanted and isinstance(auths[key], dict):
            found = _decode(auths[key], path, key)
            if found:
                return found
    return None


def store_credentials(registry: str, credentials: Credentials, path: Path | None = None) -> Path:
    path = path or config_path()
    data = _read(path)
    auths = data.setdefault("auths", {})
    wanted = _canonical(registry)
    for key in [k for k in auths if _canonical(k) == wanted]:
        del auths[key]
    entry: dict = {}
    helper = _helper(data, registry)
    if helper:       # the secret goes to the helper; Docker keeps an empty entry
        username = _TOKEN_USERNAME if credentials.identity_token else credentials.username
        secret = credentials.identity_token or credentials.password
        _run_helper(helper, "store", json.dumps({"ServerURL": _store_key(registry),
                                                 "Username": username, "Secret": secret}), path)
    elif credentials.identity_token:
        entry["auth"] = base64.b64encode(f"{credentials.username}:".encode()).decode()
        entry["identitytoken"] = credentials.identity_token
    else:
        userpass = f"{credentials.username}:{credentials.password}".encode()
        entry["auth"] = base64.b64encode(userpass).decode()
    auths[_store_key(registry)] = entry
    _write(path, data)
    return path


def remove_credentials(registry: str, path: Path | None = None) -> bool:
    """Forget `registry`'s credentials; False if there were none."""
    path = path or config_path()
    data = _read(path)
    auths = data.get("auths") or {}
    wanted = _canonical(registry)
    keys = [k for k in auths if _canonical(k) == wanted]
    helper = _helper(data, registry)
    if helper:
        _run_helper(helper, "erase", _store_key(registry), path)
    for key in keys:
        del auths[key]
    if keys:
        _write(path, data)
    return bool(keys)


def login(registry: str, username: str, password: str, *, insecure: bool | None = None,
          path: Path | None = None) -> Path:
    """Check the credentials against the registry, then store them. Returns
    the config file written; Unauthorized if the registry refuses them."""
    if not username or not password:
        raise CredentialsError("login needs a username and a password")
    from capsa.registry.client import RegistryClient  # httpx only when talking to a registry

    credentials = Credentials(username, password)
    with RegistryClient(registry, insecure=insecure, credentials=credentials) as client:
        client.ping(authenticate=True)
    return store_credentials(registry, credentials, path)


def logout(registry: str, path: Path | None = None) -> bool:
    return remove_credentials(registry, path)
