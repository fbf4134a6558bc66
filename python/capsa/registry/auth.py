"""Authentication to a registry, driven by its `WWW-Authenticate` challenge:
Bearer tokens from the realm the registry names (anonymous or with
credentials, cached per scope until they expire) or HTTP Basic."""

from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from capsa.registry.credentials import Credentials
from capsa.registry.errors import RegistryError, Unauthorized

# Docker's floor: a token with a shorter or missing lifetime is good for 60 s.
MIN_TOKEN_LIFETIME = 60
# Renew this long before expiry so a token does not lapse in flight.
EXPIRY_MARGIN = 10

_PARAM_RE = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)        # a scheme or a parameter name
        (?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?  # =value or ="quoted value"
        \s*,?""", re.VERBOSE)


@dataclass
class Challenge:
    scheme: str                     # lowercase: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """RFC 7235 challenges; quoted values may hold commas (scope lists)."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _PARAM_RE.match(header, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        name, value = m.group(1), m.group(2)
        if value is None:
            challenges.append(Challenge(name.lower()))
        elif challenges:
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            challenges[-1].params[name.lower()] = value
    return challenges


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


class Authenticator:
    """The Authorization header for a request with given scopes. The first 401
    teaches it the registry's scheme; after that it authorizes up front."""

    def __init__(self, host: str, credentials: Credentials | None,
                 send: Callable[..., httpx.Response]):
        self.host = host
        self.credentials = credentials
        self._send = send           # the client's retrying sender, without auth
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.clock = time.monotonic     # replaceable, so tests can move time on

    @property
    def challenged(self) -> bool:
        return self._challenge is not None

    def header(self, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            challenge = self._challenge
            if challenge is None:
                return None
            if challenge.scheme == "basic":
                return self._basic() if self.credentials else None
            cached = self._tokens.get(scopes)
            if cached and cached[1] > self.clock():
                return f"Bearer {cached[0]}"
            token, lifetime = self._fetch_token(challenge, scopes)
            self._tokens[scopes] = (token, self.clock() + max(lifetime - EXPIRY_MARGIN, 1))
            return f"Bearer {token}"

    def on_unauthorized(self, response: httpx.Response, scopes: tuple[str, ...],
                        sent: str | None) -> bool:
        """Learn from a 401. True if asking again with new authorization can
        help (none was sent, or a token the registry no longer takes)."""
        found = [c for c in parse_challenges(response.headers.get("www-authenticate", ""))
                 if c.scheme in ("bearer", "basic")]
        if not found:
            raise RegistryError(f"registry {self.host} asked for authentication "
                                "with no Bearer or Basic challenge")
        challenge = next((c for c in found if c.scheme == "bearer"), found[0])
        if challenge.scheme == "bearer" and not challenge.params.get("realm"):
            raise RegistryError(f"registry {self.host} sent a Bearer challenge without a realm")
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached and sent == f"Bearer {cached[0]}":
                del self._tokens[scopes]       # refused: not one to reuse (another may be newer)
            self._challenge = challenge
        if challenge.scheme == "basic" and not self.credentials:
            return False
        return sent is None or sent.startswith("Bearer ")

    def _basic(self) -> str:
        c = self.credentials
        pair = base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
        return f"Basic {pair}"

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> tuple[str, float]:
        realm = challenge.params["realm"]
        if not realm.startswith(("https://", "http://")):
            raise RegistryError(f"registry {self.host} names a token realm that is not a URL: {realm}")
        wanted = list(scopes)
        extra = challenge.params.get("scope")
        if extra and extra not in wanted and not scopes:
            wanted.append(extra)
        service = challenge.params.get("service")
        c = self.credentials
        if c and c.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": c.identity_token,
                    "client_id": "capsa", "scope": " ".join(wanted)}
            if service:
                form["service"] = service
            response = self._send("POST", realm, data=form)
        else:
            params = [("scope", s) for s in wanted]
            if service:
                params.insert(0, ("service", service))
            headers = {}
            if c and c.username:
                params.append(("account", c.username))
                headers["Authorization"] = self._basic()
            response = self._send("GET", realm, params=params, headers=headers)
        if response.status_code in (401, 403):
            if c:
                raise Unauthorized(f"login to {self.host} refused: incorrect username or password")
            raise Unauthorized(f"{self.host} refused an anonymous token; "
                               f"run 'capsa login {self.host}'")
        if response.status_code != 200:
            raise RegistryError(f"token server {realm} answered HTTP {response.status_code}")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 0)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token or not isinstance(token, str):
            raise RegistryError(f"token server {realm} answered without a token")
        return token, max(lifetime, MIN_TOKEN_LIFETIME)
