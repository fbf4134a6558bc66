"""Image commands, with Docker's names and flags: pull, push, images, rmi, tag,
history, save, load, import, login, logout, and the `capsa image ...` group
(ls, rm, inspect, prune and the same commands again). The store, httpx and
rich are imported inside the commands."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import List, Optional

import typer

from capsa.cli import app, fail, group, open_store

image_group = group("image", "Manage images")


def command(*names: str, grouped: tuple[str, ...] = ()):
    """Register a function as top-level commands `names` and as `capsa image`
    subcommands `grouped`."""
    def register(fn):
        for n in names:
            app.command(n)(fn)
        for n in grouped:
            image_group.command(n)(fn)
        return fn
    return register


# ------------------------------------------------------------------- helpers

def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        text = text.replace("Z", "+00:00")
        if "." in text:     # Go writes nanoseconds; Python takes microseconds
            head, _, frac = text.partition(".")
            digits = "".join(c for c in frac if c.isdigit())
            text = f"{head}.{digits[:6]}{frac[len(digits):]}"
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _since(text: str | None) -> str:
    from capsa.image.progress import human_duration
    when = _parse_time(text)
    return "N/A" if when is None else human_duration(time.time() - when) + " ago"


def _table(rows: list[list[str]]) -> None:
    """Docker's tabwriter layout: columns padded to the widest cell plus 3."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        out.append("".join(c.ljust(w + 3) for c, w in zip(r[:-1], widths)) + r[-1])
    sys.stdout.write("\n".join(out) + "\n")


def _short(image_id: str, no_trunc: bool = False) -> str:
    return image_id if no_trunc else image_id.removeprefix("sha256:")[:12]


# ---------------------------------------------------------------------- pull

@command("pull", grouped=("pull",))
def pull_command(
    name: str = typer.Argument(..., metavar="NAME[:TAG|@DIGEST]"),
    platform: Optional[str] = typer.Option(None, "--platform", help="os/arch[/variant] to pull from an index"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image reference"),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP (loopback registries always may)"),
) -> None:
    """Download an image from a registry."""
    from capsa.image.pull import pull
    with open_store() as store:
        image = pull(store, name, platform=platform, quiet=quiet, insecure=insecure or None)
    from capsa.image.reference import Reference
    ref = Reference.parse(name)
    print(str(ref) if image else name)


# ---------------------------------------------------------------------- push

@command("push", grouped=("push",))
def push_command(
    name: str = typer.Argument(..., metavar="NAME[:TAG]"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Suppress verbose output"),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP (loopback registries always may)"),
) -> None:
    """Upload an image to a registry."""
    from capsa.image.push import push
    with open_store() as store:
        digest = push(store, name, quiet=quiet, insecure=insecure or None)
    if quiet:
        print(digest)


# -------------------------------------------------------------------- images

@command("images", grouped=("ls", "list"))
def images_command(
    repository: Optional[str] = typer.Argument(None, metavar="[REPOSITORY[:TAG]]"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only show image IDs"),
    all_: bool = typer.Option(False, "-a", "--all", help="Show all images (no intermediate images exist here)"),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Don't truncate output"),
    digests: bool = typer.Option(False, "--digests", help="Show digests"),
    fmt: Optional[str] = typer.Option(None, "--format", help="table (default) or json"),
) -> None:
    """List images."""
    from capsa.image.reference import Reference
    from capsa.image.progress import human_size
    with open_store() as store:
        images = store.images()
    rows = []   # (repository, tag, digest, image)
    wanted = Reference.parse(repository) if repository else None
    for image in images:
        names = image.repo_tags or ([] if wanted else ["<none>:<none>"])
        for name in names:
            if name == "<none>:<none>":
                repo, tag = "<none>", "<none>"
            else:
                ref = Reference.parse(name)
                if wanted and (ref.name != wanted.name or (":" in repository.rsplit("/", 1)[-1]
                                                           and ref.tag != wanted.tag)):
                    continue
                repo, tag = ref.familiar_name, ref.tag
            digest = next((d.split("@", 1)[1] for d in image.repo_digests
                           if d.split("@", 1)[0] == repo), "<none>")
            rows.append((repo, tag, digest, image))
    if quiet:
        seen = []
        for _, _, _, image in rows:
            short = _short(image.id, no_trunc)
            if short not in seen:
                seen.append(short)
        if seen:
            print("\n".join(seen))
        return
    if fmt == "json":
        for repo, tag, digest, image in rows:
            print(json.dumps({
                "Containers": "N/A", "CreatedAt": image.created or "", "CreatedSince": _since(image.created),
                "Digest": digest, "ID": _short(image.id, no_trunc), "Repository": repo,
                "SharedSize": "N/A", "Size": human_size(image.size), "Tag": tag,
                "UniqueSize": "N/A", "VirtualSize": human_size(image.size)}))
        return
    if fmt not in (None, "table"):
        fail(f"--format {fmt!r}: only table and json are supported", 2)
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = [header]
    for repo, tag, digest, image in rows:
        table.append([repo, tag] + ([digest] if digests else []) +
                     [_short(image.id, no_trunc), _since(image.created), human_size(image.size)])
    _table(table)


# ----------------------------------------------------------------------- rmi

@command("rmi", grouped=("rm", "remove"))
def rmi_command(
    images: List[str] = typer.Argument(..., metavar="IMAGE..."),
    force: bool = typer.Option(False, "-f", "--force", help="Force removal of the image"),
) -> None:
    """Remove one or more images."""
    from capsa.errors import CapsaError
    errors = 0
    with open_store() as store:
        for name in images:
            try:
                for kind, what in store.remove(name, force=force):
                    print(f"{kind}: {what}")
            except CapsaError as e:
                print(f"capsa: error: {e}", file=sys.stderr)
                errors += 1
    if errors:
        raise typer.Exit(1)


# ----------------------------------------------------------------------- tag

@command("tag", grouped=("tag",))
def tag_command(
    source: str = typer.Argument(..., metavar="SOURCE_IMAGE[:TAG]"),
    target: str = typer.Argument(..., metavar="TARGET_IMAGE[:TAG]"),
) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    with open_store() as store:
        store.tag(source, target)


# ------------------------------------------------------------------- inspect

def inspect_document(store, image) -> dict:
    from capsa.image import schema
    cfg = schema.config(image.config, f"the image config {image.id}")    # one stored unchecked: one line
    return {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": "",
        "Comment": next((h.get("comment", "") for h in reversed(cfg.get("history") or [])), ""),
        "Created": image.created or "",
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", ""),
        **({"Variant": cfg["variant"]} if cfg.get("variant") else {}),
        "Os": cfg.get("os", ""),
        "Size": image.size,
        "GraphDriver": {
            "Data": {"LowerDir": ":".join(str(d) for d in reversed(image.layer_dirs))},
            "Name": "overlay",
        },
        "RootFS": {"Type": "layers", "Layers": image.diff_ids},
        "Metadata": {"LastTagTime": datetime.fromtimestamp(image.added).astimezone().isoformat()},
        "Descriptor": {"mediaType": image.manifest_media_type, "digest": image.manifest_digest,
                       "size": store.blob_path(image.manifest_digest).stat().st_size},
    }


def render_template(template: str, doc) -> str:
    """The part of Go templates that inspect users type: {{.A.B}} and {{json .A}}."""
    import re

    def value(path: str):
        v = doc
        for part in [p for p in path.strip().lstrip(".").split(".") if p]:
            v = v.get(part) if isinstance(v, dict) else None
        return v

    def substitute(m: re.Match) -> str:
        expr = m.group(1).strip()
        if expr.startswith("json "):
            return json.dumps(value(expr[5:]))
        v = value(expr)
        if isinstance(v, (dict, list)):
            return json.dumps(v) if isinstance(v, dict) else "[" + " ".join(map(str, v)) + "]"
        return "<no value>" if v is None else str(v)

    return re.sub(r"\{\{\s*(.*?)\s*\}\}", substitute, template)


@image_group.command("inspect")
def inspect_command(
    images: List[str] = typer.Argument(..., metavar="IMAGE..."),
    fmt: Optional[str] = typer.Option(None, "-f", "--format", help="Go-template subset: {{.Id}}, {{json .Config}}"),
) -> None:
    """Display detailed information on one or more images."""
    with open_store() as store:
        docs = []
        missing = []
        for name in images:
            image = store.lookup(name)
            if image is None:
                missing.append(name)
            else:
                docs.append(inspect_document(store, image))
    if fmt:
        for doc in docs:
            print(render_template(fmt, doc))
    else:
        print(json.dumps(docs, indent=4))
    if missing:
        print(f"capsa: error: No such image: {missing[0]}", file=sys.stderr)
        raise typer.Exit(1)


# ------------------------------------------------------------------- history

@command("history", grouped=("history",))
def history_command(
    image: str = typer.Argument(...),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Don't truncate output"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only show image IDs"),
    human: bool = typer.Option(True, "-H", "--human", help="Print sizes and dates in human readable format"),
) -> None:
    """Show the history of an image."""
    from capsa.image.progress import human_size
    with open_store() as store:
        img = store.get(image)
        sizes = [store.layer_size(c) or 0 for c in img.chain_ids]
    from capsa.image import schema
    entries = schema.config(img.config, f"the image config {img.id}").get("history") or [{} for _ in sizes]
    layer = 0
    rows = []
    for entry in entries:
        if entry.get("empty_layer"):
            size = 0
        else:
            size = sizes[layer] if layer < len(sizes) else 0
            layer += 1
        rows.append((entry, size))
    rows.reverse()
    if quiet:
        print(_short(img.id, no_trunc))
        return
    table = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for i, (entry, size) in enumerate(rows):
        created_by = (entry.get("created_by") or "").replace("\t", " ").replace("\n", " ")
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        table.append([_short(img.id, no_trunc) if i == 0 else "<missing>",
                      _since(entry.get("created")) if human else entry.get("created", ""),
                      created_by, human_size(size) if human else str(size), entry.get("comment", "")])
    _table(table)


# ------------------------------------------------------------- save and load

@command("save", grouped=("save",))
def save_command(
    images: List[str] = typer.Argument(..., metavar="IMAGE..."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to a file, instead of STDOUT"),
) -> None:
    """Save one or more images to a tar archive (docker-archive + OCI layout)."""
    from capsa.image.archive import save
    from capsa.image.store import naming
    with open_store() as store:
        if output is None:
            if sys.stdout.isatty():
                fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
            sys.stdout.flush()
            save(store, images, sys.stdout.buffer)
            return
        tmp = output.with_name(f".{output.name}.capsa-tmp-{os.getpid()}")
        try:
            with naming(tmp), open(tmp, "wb") as f:
                save(store, images, f)
            os.replace(tmp, output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@command("load", grouped=("load",))
def load_command(
    input_: Optional[Path] = typer.Option(None, "-i", "--input", help="Read from tar archive file, instead of STDIN"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Suppress the load output"),
) -> None:
    """Load images from a tar archive (docker-archive or OCI archive)."""
    import shutil
    from capsa.image.archive import load
    from capsa.image.progress import for_output
    with open_store() as store:
        progress = for_output(quiet)
        if input_ is None or str(input_) == "-":
            if sys.stdin.isatty():
                fail("requested load from stdin, but stdin is empty (use -i FILE)")
            try:
                with store.writing():
                    tmp = store.temp_path("stdin-")
                    try:
                        with open(tmp, "wb") as f:
                            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
                        load(store, str(tmp), progress, name="the archive on stdin")
                    finally:
                        tmp.unlink(missing_ok=True)
            except BaseException:
                store.collect()     # what the load stored (it could not collect under our lock)
                raise
        else:
            if not input_.is_file():
                fail(f"open {input_}: no such file")
            load(store, str(input_), progress)
        progress.close()


@command("import", grouped=("import",))
def import_command(
    source: str = typer.Argument(..., metavar="file|-"),
    reference: Optional[str] = typer.Argument(None, metavar="[REPOSITORY[:TAG]]"),
    change: List[str] = typer.Option([], "-c", "--change", help="Apply Dockerfile instruction to the image"),
    message: str = typer.Option("", "-m", "--message", help="Set commit message for imported image"),
) -> None:
    """Import the contents from a tarball to create a filesystem image."""
    from capsa.image.importer import import_tarball
    from capsa.image.reference import Reference
    tags = [str(Reference.parse(reference))] if reference else []
    with open_store() as store:
        if source == "-":
            image = import_tarball(store, sys.stdin.buffer, tags=tags, changes=change, message=message)
        else:
            try:
                f = open(source, "rb")
            except OSError as e:
                fail(f"open {source}: {e.strerror.lower()}")
            with f:
                image = import_tarball(store, f, tags=tags, changes=change, message=message,
                                       origin=source)
    print(image.id)


# --------------------------------------------------------------------- prune

@image_group.command("prune")
def prune_command(
    all_: bool = typer.Option(False, "-a", "--all", help="Remove all unused images, not just dangling ones"),
    force: bool = typer.Option(False, "-f", "--force", help="Do not prompt for confirmation"),
) -> None:
    """Remove unused images."""
    from capsa.image.progress import human_size
    if not force and sys.stdin.isatty():
        what = "all images without at least one container associated to them" if all_ else "all dangling images"
        answer = input(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return
    with open_store() as store:
        deleted, reclaimed = store.prune(all=all_)
    if deleted:
        print("Deleted Images:")
        for image_id in deleted:
            print(f"deleted: {image_id}")
        print()
    print(f"Total reclaimed space: {human_size(reclaimed)}")


# ------------------------------------------------------------ login / logout

@app.command("login")
def login_command(
    server: Optional[str] = typer.Argument(None, metavar="[SERVER]"),
    username: Optional[str] = typer.Option(None, "-u", "--username"),
    password: Optional[str] = typer.Option(None, "-p", "--password"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Take the password from stdin"),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP (loopback registries always may)"),
) -> None:
    """Log in to a registry (credentials go to Docker's config.json)."""
    from capsa.registry.credentials import login
    if password_stdin:
        if password:
            fail("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty():
            fail("login needs -u USERNAME when stdin is not a terminal")
        username = input("Username: ")
    if not password:
        import getpass
        password = getpass.getpass("Password: ")
    login(server or "docker.io", username, password, insecure=insecure or None)
    print("Login Succeeded")


@app.command("logout")
def logout_command(server: Optional[str] = typer.Argument(None, metavar="[SERVER]")) -> None:
    """Log out from a registry."""
    from capsa.registry.credentials import logout
    name = server or "docker.io"
    if logout(name):
        print(f"Removing login credentials for {name}")
    else:
        print(f"Not logged in to {name}")
