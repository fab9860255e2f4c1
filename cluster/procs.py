"""Small process and network helpers shared by the local stack's servers."""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """An expected failure of the local stack, shown to the user as one line."""


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; a failure raises StackError with its last output lines."""
    label = what or Path(args[0]).name
    try:
        done = subprocess.run(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{label}: executable not found: {args[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{label}: no answer after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise StackError(f"{label} failed (exit {done.returncode}): {tail(done)}")
    return done


def tail(done: subprocess.CompletedProcess[str], lines: int = 3) -> str:
    text = (done.stderr or "").strip() or (done.stdout or "").strip()
    return " | ".join(text.splitlines()[-lines:]) or "no output"


def require_executable(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` not found on PATH; {hint}")
    return path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie (exited, not reaped yet) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name may hold spaces and parentheses; the state follows the last ')'.
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise StackError(f"system user `{name}` does not exist") from exc
