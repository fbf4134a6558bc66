"""capsa's native binaries (capsa-runtime, capsa-monitor, capsa-init): next
to the interpreter, in the venv's bin where `make build` installs them, else
on PATH."""

import os
import sys

from capsa.errors import CapsaError


def native_binary(name: str, needed_for: str = "") -> str:
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(here):
        return here
    import shutil

    found = shutil.which(name)
    if found is None:
        why = f" (needed by {needed_for})" if needed_for else ""
        raise CapsaError(f"{name} not found{why}: install capsa with `make build` (it puts the binary in .venv/bin)")
    return found
