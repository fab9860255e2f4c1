"""When the failover watchdog acts, and what it says when it does not; the data
folder closed to other local users."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from cluster.settings import StackSettings
from cluster.stack import LocalStack
from cluster.watchdog import Standby, reason_not_to_fail_over

MIB = 1 << 20
STREAMING = Standby(answers=True, in_recovery=True, behind_bytes=0)


def why(
    silent: float = 10.0,
    standby: Standby = STREAMING,
    synchronous: bool = False,
    paused: bool = False,
) -> str | None:
    return reason_not_to_fail_over(
        silent, 6.0, standby, synchronous=synchronous, max_lag_bytes=MIB, paused=paused
    )


def test_a_silent_primary_with_a_current_standby_is_failed_over() -> None:
    assert why() is None
    assert why(standby=Standby(True, True, MIB)) is None  # at the bound: still fine


def test_not_before_the_primary_was_silent_long_enough() -> None:
    assert why(silent=5.9) == "primary silent for 5.9s of 6s"


@pytest.mark.parametrize(
    ("standby", "expected"),
    [
        (Standby(answers=False, error="refused"), "its standby does not answer either (refused)"),
        (Standby(True, in_recovery=False, behind_bytes=0), "is not in recovery"),
    ],
)
def test_never_without_a_standby_to_promote(standby: Standby, expected: str) -> None:
    for synchronous in (False, True):
        reason = why(standby=standby, synchronous=synchronous)
        assert reason is not None and expected in reason


def test_asynchronous_replicas_bound_what_a_failover_loses() -> None:
    behind = why(standby=Standby(True, True, MIB + 1))
    assert behind is not None and f"{MIB + 1} bytes behind" in behind
    unknown = why(standby=Standby(True, True, None))
    assert unknown is not None and "unknown" in unknown
    # Synchronous replicas: an acknowledged commit is on the standby already.
    assert why(standby=Standby(True, True, MIB + 1), synchronous=True) is None
    assert why(standby=Standby(True, True, None), synchronous=True) is None


def test_paused_it_says_so_only_when_it_would_have_acted() -> None:
    assert why(paused=True) == "paused (`nextflow shards watchdog resume`)"
    assert why(silent=1.0, paused=True) == "primary silent for 1.0s of 6s"


def test_the_data_folder_is_closed_to_other_users(tmp_path: Path) -> None:
    """Ray's temp folders below it are 0777: the folder itself lets no one else in."""
    folder = tmp_path / "data"
    LocalStack(StackSettings(data_dir=folder)).close_data_dir()
    info = folder.stat()
    if os.geteuid() == 0:  # PostgreSQL, as `postgres`, enters through the group
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o750, grp.getgrnam("postgres").gr_gid)
    else:
        assert stat.S_IMODE(info.st_mode) == 0o700
    shared = tmp_path / "shared"  # sticky, like /tmp: not ours alone, left as it is
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)
    LocalStack(StackSettings(data_dir=shared)).close_data_dir()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
