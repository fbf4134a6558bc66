"""Containers from images, the Docker way: spec (image config + flags -> OCI
spec), user (User resolved in the image), state (records in capsa.db, live
status), lifecycle (create/start/stop/kill/rm/wait), logs (json-file), names,
runflags (`capsa run`'s flags and fast path), terminal (`run -it`). Detached
containers are supervised by the native capsa-monitor (rust/monitor)."""
