"""`capsa ps`: the container list, Docker's columns. Kept free of typer so
the console script can answer `ps` without importing it (as `run`)."""

from __future__ import annotations

import json
import time

from capsa.errors import CapsaError


def rows(store, all_: bool):
    from capsa.container import lifecycle
    out = []
    for rec in store.all():
        if lifecycle.reap_removed(store, rec):
            continue
        st = store.status(rec)
        if not all_ and not st.live:
            continue
        out.append((rec, st))
    return out


def matches(rec, st, filters: list[str]) -> bool:
    for f in filters:
        k, _, v = f.partition("=")
        if k == "status" and st.status != v:
            return False
        if k == "name" and v not in rec.name:
            return False
        if k == "id" and not rec.id.startswith(v):
            return False
        if k == "label":
            lk, eq, lv = v.partition("=")
            labels = rec.options.get("labels") or {}
            if lk not in labels or (eq and labels[lk] != lv):
                return False
        if k == "ancestor" and v not in (rec.image_name, rec.image_id):
            return False
    return True


def show(store, *, all_: bool = False, quiet: bool = False, format_: str = "table", filters: list[str] = (),
         no_trunc: bool = False) -> None:
    """List containers (running ones; -a for all)."""
    from capsa.container import lifecycle
    listed = [(r, s) for r, s in rows(store, all_) if matches(r, s, list(filters))]
    if quiet:
        for rec, _ in listed:
            print(rec.id if no_trunc else rec.id[:12])
        return
    if format_ == "json":
        for rec, st in listed:
            print(json.dumps({"ID": rec.id[:12], "Image": rec.image_name, "Command": command_text(rec, True),
                              "CreatedAt": rec.created, "State": st.status, "Status": lifecycle.status_text(st),
                              "Ports": "", "Names": rec.name, "Labels": rec.options.get("labels") or {}}))
        return
    if format_ != "table":
        raise CapsaError(f"unknown --format {format_!r}: use table or json")
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for rec, st in listed:
        created = lifecycle.parse_time(rec.created)
        ago = lifecycle.human_duration(time.time() - created) + " ago" if created else ""
        table.append((rec.id if no_trunc else rec.id[:12], rec.image_name, command_text(rec, no_trunc), ago,
                      lifecycle.status_text(st), "", rec.name))
    widths = [max(len(r[i]) for r in table) for i in range(7)]
    for r in table:
        print("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())


def command_text(rec, full: bool) -> str:
    text = " ".join(rec.argv)
    if not full and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'
