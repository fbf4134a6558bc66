"""The one place where documents from outside are checked before capsa
uses a field of them: image manifests, image indexes (and Docker manifest
lists), image configs, and the manifest.json of a docker-archive. They come
from registries, archives and old stores, so any of them may be `[]`, a
size may be the string "12", a Cmd the string "sh".

Each check takes the bytes (or the already parsed JSON) and returns the
document, or raises InvalidDocument (exit code 125) with one line naming
the document, the field and what is wrong with it:

    the manifest of registry:5000/app:v1 is invalid: layers[0].size is "12", not a size in bytes

Only what capsa reads is checked, plus the types the formats fix for the
fields it passes on; unknown fields are left alone, as the formats say.
Standard library only: `capsa run` checks the stored config on its start path."""

from __future__ import annotations

import json
import re

from capsa.errors import BadInput

_DIGEST = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class InvalidDocument(BadInput):
    """A manifest, index, config or archive manifest that breaks its format."""


def _shown(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    def __init__(self, what: str):
        self.what = what

    def fail(self, path: str, problem: str):
        where = f"{path} " if path else ""
        raise InvalidDocument(f"{self.what} is invalid: {where}{problem}")

    def wrong(self, path: str, value, expected: str):
        if value is None:
            self.fail(path, f"is missing (expected {expected})")
        self.fail(path, f"is {_shown(value)}, not {expected}")

    # -- shapes --------------------------------------------------------

    def parsed(self, data) -> object:
        if not isinstance(data, (bytes, bytearray, str)):
            return data
        try:
            return json.loads(data)
        except RecursionError:
            self.fail("", "it is nested too deeply to parse")
        except ValueError as e:       # also UnicodeDecodeError
            self.fail("", f"it is not JSON ({e})")

    def object(self, value, path: str = "") -> dict:
        if not isinstance(value, dict):
            if path == "":
                self.fail("", f"it is {_shown(value)}, not a JSON object")
            self.wrong(path, value, "an object")
        return value

    def optional_object(self, doc: dict, key: str, path: str) -> dict | None:
        value = doc.get(key)
        if value is not None and not isinstance(value, dict):
            self.wrong(f"{path}{key}", value, "an object")
        return value

    def string(self, doc: dict, key: str, path: str, *, required: bool = False) -> str | None:
        value = doc.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            self.wrong(f"{path}{key}", value, "a string")
        return value

    def strings(self, doc: dict, key: str, path: str) -> list[str] | None:
        """null, absent or a list of strings."""
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.wrong(f"{path}{key}", value, "a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.wrong(f"{path}{key}[{i}]", item, "a string")
        return value

    def string_map(self, doc: dict, key: str, path: str) -> None:
        value = self.optional_object(doc, key, path)
        for k, v in (value or {}).items():
            if not isinstance(v, str):
                self.wrong(f"{path}{key}.{k}", v, "a string")

    def boolean(self, doc: dict, key: str, path: str) -> None:
        value = doc.get(key)
        if value is not None and not isinstance(value, bool):
            self.wrong(f"{path}{key}", value, "true or false")

    def integer(self, doc: dict, key: str, path: str) -> None:
        value = doc.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            self.wrong(f"{path}{key}", value, "an integer")

    def items(self, doc: dict, key: str, path: str, *, required: bool = True) -> list:
        value = doc.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            self.wrong(f"{path}{key}", value, "a list")
        return value

    def schema_version(self, doc: dict) -> None:
        value = doc.get("schemaVersion")
        if value != 2 or isinstance(value, bool):
            self.wrong("schemaVersion", value, "2")

    def digest(self, value, path: str, *, sha256_only: bool = False) -> str:
        algorithm, _, hex_part = value.partition(":") if isinstance(value, str) else ("", "", "")
        pattern = _DIGEST.get(algorithm) if algorithm == "sha256" or not sha256_only else None
        if pattern is None or not pattern.fullmatch(hex_part):
            self.wrong(path, value, "a sha256 digest, sha256:<64 lowercase hex digits>")
        return value

    def descriptor(self, value, path: str, *, sha256_only: bool = False) -> dict:
        d = self.object(value, path)
        media_type = d.get("mediaType")
        if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
            self.wrong(f"{path}.mediaType", media_type, "a media type")
        self.digest(d.get("digest"), f"{path}.digest", sha256_only=sha256_only)
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            self.wrong(f"{path}.size", size, "a size in bytes")
        self.strings(d, "urls", f"{path}.")
        self.string_map(d, "annotations", f"{path}.")
        return d


# ---------------------------------------------------------------- documents

def document(data, what: str) -> dict:
    """Any JSON object (the first look at a manifest whose type is not known
    yet); its mediaType, if any, is a string."""
    c = _Checker(what)
    doc = c.object(c.parsed(data))
    c.string(doc, "mediaType", "")
    return doc


def manifest(data, what: str) -> dict:
    """An OCI image manifest or Docker's schema 2 manifest."""
    c = _Checker(what)
    doc = c.object(c.parsed(data))
    c.schema_version(doc)
    c.string(doc, "mediaType", "")
    c.descriptor(doc.get("config"), "config", sha256_only=True)
    for i, layer in enumerate(c.items(doc, "layers", "")):
        c.descriptor(layer, f"layers[{i}]", sha256_only=True)
    c.string_map(doc, "annotations", "")
    return doc


def index(data, what: str) -> dict:
    """An OCI image index or Docker's manifest list."""
    c = _Checker(what)
    doc = c.object(c.parsed(data))
    c.schema_version(doc)
    c.string(doc, "mediaType", "")
    for i, entry in enumerate(c.items(doc, "manifests", "")):
        d = c.descriptor(entry, f"manifests[{i}]")
        platform = c.optional_object(d, "platform", f"manifests[{i}].")
        if platform is not None:
            path = f"manifests[{i}].platform."
            for key in ("os", "architecture", "variant", "os.version"):
                c.string(platform, key, path)
            c.strings(platform, "os.features", path)
            c.strings(platform, "features", path)
    c.string_map(doc, "annotations", "")
    return doc


_CONFIG_STRINGS = ("User", "WorkingDir", "StopSignal", "Hostname", "Domainname", "Image")
_CONFIG_STRING_LISTS = ("Entrypoint", "Cmd", "Env", "OnBuild", "Shell")
_CONFIG_OBJECTS = ("ExposedPorts", "Volumes", "Healthcheck")


def config(data, what: str) -> dict:
    """An image config (OCI image-spec config.md; Docker's adds fields of the
    same types): what containers take from it (config.*), its layers'
    diff IDs (rootfs) and what `history` and `inspect` show."""
    c = _Checker(what)
    doc = c.object(c.parsed(data))
    for key in ("architecture", "os", "variant", "created", "author", "docker_version", "os.version"):
        c.string(doc, key, "")
    rootfs = c.object(doc.get("rootfs"), "rootfs")
    if rootfs.get("type") != "layers":
        c.wrong("rootfs.type", rootfs.get("type"), '"layers"')
    for i, diff_id in enumerate(c.items(rootfs, "diff_ids", "rootfs.")):
        c.digest(diff_id, f"rootfs.diff_ids[{i}]", sha256_only=True)
    _container_config(c, doc)
    for i, entry in enumerate(c.items(doc, "history", "", required=False)):
        c.object(entry, f"history[{i}]")
        for key in ("created", "created_by", "author", "comment"):
            c.string(entry, key, f"history[{i}].")
        c.boolean(entry, "empty_layer", f"history[{i}].")
    return doc


def container_config(data, what: str) -> dict:
    """Only what a container takes from an image config (its `config`
    object): what `run` checks of a config already in the store."""
    c = _Checker(what)
    doc = c.object(c.parsed(data))
    _container_config(c, doc)
    return doc


def _container_config(c: _Checker, doc: dict) -> None:
    container = c.optional_object(doc, "config", "")
    if container is None:
        return
    for key in _CONFIG_STRINGS:
        c.string(container, key, "config.")
    for key in _CONFIG_STRING_LISTS:
        c.strings(container, key, "config.")
    for key in _CONFIG_OBJECTS:
        c.optional_object(container, key, "config.")
    c.string_map(container, "Labels", "config.")
    c.boolean(container, "ArgsEscaped", "config.")
    c.integer(container, "StopTimeout", "config.")


def docker_archive(data, what: str) -> list[dict]:
    """The manifest.json of a docker-archive (`docker save`): a list of
    {"Config": path, "RepoTags": [names], "Layers": [paths]}."""
    c = _Checker(what)
    entries = c.parsed(data)
    if not isinstance(entries, list):
        c.fail("", f"it is {_shown(entries)}, not a list of images")
    for i, value in enumerate(entries):
        entry = c.object(value, f"[{i}]")
        c.string(entry, "Config", f"[{i}].", required=True)
        c.strings(entry, "RepoTags", f"[{i}].")
        layers = entry.get("Layers")
        if not isinstance(layers, list):
            c.wrong(f"[{i}].Layers", layers, "a list of paths")
        c.strings(entry, "Layers", f"[{i}].")
    return entries


def same_layer_count(layers: list, diff_ids: list, what: str) -> None:
    """A manifest's layers and its config's diff IDs pair up one to one."""
    if len(layers) != len(diff_ids):
        raise InvalidDocument(f"{what} is invalid: it has {len(layers)} layers but its config "
                              f"{len(diff_ids)} diff IDs")
