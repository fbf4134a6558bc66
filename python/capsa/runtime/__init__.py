"""The OCI runtime, in-process: the same operations as `capsa-runtime`
(create, start, state, kill, delete, run, exec, pause, resume, update,
stats), with no process spawned per call.

    from capsa.runtime import Runtime
    rt = Runtime("/run/capsa/runtime")
    code = rt.run("demo", "/path/to/bundle")

Every failure raises ContainerError with a message that names the step,
the path and the errno. Kept import-light.

A Runtime starts many containers, so a background thread makes network
and IPC namespaces ahead (a network namespace is the costliest kernel step
of a start) and each container joins fresh ones instead of making them.
Each spare serves one container, two of each kind are kept, and they go
with the process. Containers with a user namespace always make their own.
"""


import os

from capsa import _core
from capsa._core import ContainerError

DEFAULT_ROOT = "/run/capsa/runtime"

__all__ = ["Runtime", "ContainerError", "DEFAULT_ROOT"]


def _json(text: str):
    import json  # only callers that want dicts pay for it

    return json.loads(text)


class Runtime:
    """Containers whose state lives under one root directory."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, *, systemd_cgroup: bool = False,
                 spare_namespaces: bool = True):
        """spare_namespaces: join network and IPC namespaces made ahead on a
        background thread (see the module's doc); False makes each in its clone."""
        self.root = os.fspath(root)
        self.systemd_cgroup = systemd_cgroup
        self.spare_namespaces = spare_namespaces

    def create(self, id: str, bundle: str | os.PathLike, *, console_socket=None, pid_file=None,
               no_pivot: bool = False, preserve_fds: int = 0) -> int:
        """Set the container up; its process waits for start(). Returns its pid."""
        return _core.create(self.root, id, os.fspath(bundle), _path(console_socket), _path(pid_file),
                            no_pivot, preserve_fds, self.systemd_cgroup, spare_namespaces=self.spare_namespaces)

    def start(self, id: str) -> None:
        """Run the user process of a created container."""
        _core.start(self.root, id)

    def run(self, id: str, bundle: str | os.PathLike, *, console_socket=None, pid_file=None,
            no_pivot: bool = False, preserve_fds: int = 0, detach: bool = False) -> int | None:
        """Create and start; unless detached, wait, delete and return the exit code."""
        return _core.run(self.root, id, os.fspath(bundle), _path(console_socket), _path(pid_file),
                         no_pivot, preserve_fds, self.systemd_cgroup, detach, spare_namespaces=self.spare_namespaces)

    def state(self, id: str) -> dict:
        """The runtime-spec state: ociVersion, id, status, pid, bundle, rootfs, created, owner, annotations."""
        return _json(_core.state(self.root, id))

    def list(self) -> "list[dict]":
        return _json(_core.list(self.root))

    def kill(self, id: str, signal: int | str = "TERM", *, all: bool = False) -> None:
        _core.kill(self.root, id, signal, all)

    def wait(self, id: str) -> int:
        """Wait for a container this process created; its exit code (128+N when killed by signal N)."""
        return _core.wait(self.root, id)

    def delete(self, id: str, *, force: bool = False) -> None:
        _core.delete(self.root, id, force)

    def ps(self, id: str) -> "list[int]":
        return _core.ps(self.root, id)

    def exec(self, id: str, process: "dict | list[str] | tuple[str, ...]", *, env=(), cwd=None, user=None,
             additional_gids=(), caps=(), no_new_privs=None, tty: bool = False, console_socket=None,
             pid_file=None, preserve_fds: int = 0, detach: bool = False) -> int:
        """Start a process in a running container: `process` is a runtime-spec
        process dict, or the args for the container's own process (which env,
        cwd, user "UID[:GID]", additional_gids, caps, no_new_privs and tty
        change, as with `runc exec ID ARGS...`). Returns the exit code (128+N
        when killed by signal N), or with detach=True the pid at once: the
        process is then a child of this one (os.waitpid collects its status)."""
        if isinstance(process, dict):
            import json

            if env or cwd is not None or user is not None or additional_gids or caps or no_new_privs is not None or tty:
                raise TypeError("exec: with a process dict, set env, cwd, user and the rest in the dict")
            return _core.exec(self.root, id, json.dumps(process), None, [], [], None, None, [], [], None, False,
                              _path(console_socket), _path(pid_file), preserve_fds, detach)
        if isinstance(process, str):
            raise TypeError("exec: pass the command as a list of args (or a process dict), not a string")
        return _core.exec(self.root, id, None, None, list(process), list(env), cwd, user, list(additional_gids),
                          list(caps), no_new_privs, tty, _path(console_socket), _path(pid_file), preserve_fds,
                          detach)

    def pause(self, id: str) -> None:
        """Freeze every process of the container (state: paused)."""
        _core.pause(self.root, id)

    def resume(self, id: str) -> None:
        _core.resume(self.root, id)

    def update(self, id: str, resources: dict) -> None:
        """New limits for a running container: a runtime-spec LinuxResources dict,
        e.g. {"memory": {"limit": 64 << 20}, "pids": {"limit": 100}}."""
        import json

        _core.update(self.root, id, json.dumps(resources))

    def stats(self, id: str) -> dict:
        """A stats sample shaped like runc's `events --stats` data: cpu, memory, pids, blkio."""
        return _json(_core.stats(self.root, id))["data"]


def _path(p):
    return None if p is None else os.fspath(p)
