"""``enipin doctor`` on a group whose every launch fails: its own sandbox, since the failures
would stay in the shared one's executions list."""

from __future__ import annotations

from collections.abc import Callable

from conftest import wait_until
from test_doctor_cli import finding, findings

from enipin_lab.sandbox import Sandbox


def test_failing_launches_fail_the_executions_check_with_their_error(
    sandbox: Callable[..., Sandbox],
) -> None:
    # GIVEN a group whose every launch fails: an empty pool and a short wait for a free ENI
    sb = sandbox(azs=1, pool_per_az=0, parameters={"PoolWaitSeconds": 30})
    sb.scale_out(2)
    wait_until(lambda: _failed(sb) >= 4, sb)
    # THEN doctor fails the recent executions with their error, and the pool with its need
    found = findings()
    runs = finding(found, "executions")
    assert runs["verdict"] == "FAIL", runs
    assert "NoFreeEni" in runs["saw"]
    assert finding(found, "pool")["verdict"] == "FAIL"


def _failed(sb: Sandbox) -> int:
    return sum(e["status"] == "FAILED" for e in sb.executions())
