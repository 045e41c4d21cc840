"""Which guest runs the verification script: namespaces where the machine allows them, the model
otherwise, and always a clear word about which and why. These run on any machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enipin_lab.sandbox import guest
from enipin_lab.sandbox.clock import FAST_SCALE, Clock
from enipin_lab.sandbox.guest import GuestFleet
from enipin_lab.sandbox.netns import NetnsUnavailable, document_script, unavailable_reason


@pytest.fixture
def clock() -> Iterator[Clock]:
    clock = Clock(FAST_SCALE)
    yield clock
    clock.close()


@pytest.fixture
def no_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "unavailable_reason", lambda: "network namespaces need root")


def test_auto_uses_namespaces_where_the_machine_allows_them(clock: Clock) -> None:
    reason = unavailable_reason()
    expected = ("netns", None) if reason is None else ("model", reason)
    fleet = GuestFleet(clock, mode="auto")
    assert (fleet.mode, fleet.mode_reason) == expected


@pytest.mark.usefixtures("no_namespaces")
def test_auto_falls_back_to_the_model_and_says_why(clock: Clock) -> None:
    fleet = GuestFleet(clock, mode="auto")
    assert (fleet.mode, fleet.mode_reason) == ("model", "network namespaces need root")


@pytest.mark.usefixtures("no_namespaces")
def test_netns_asked_for_where_it_cannot_run_fails_with_the_reason(clock: Clock) -> None:
    with pytest.raises(NetnsUnavailable, match="guest mode netns: network namespaces need root"):
        GuestFleet(clock, mode="netns")


def test_the_model_is_used_when_asked_for(clock: Clock) -> None:
    assert GuestFleet(clock, mode="model").mode == "model"


def test_an_unknown_mode_is_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="unknown guest mode 'kvm'"):
        GuestFleet(clock, mode="kvm")


def test_the_script_is_the_run_command_lines_as_the_agent_writes_them() -> None:
    document = {
        "mainSteps": [
            {"action": "aws:runPowerShellScript", "inputs": {"runCommand": ["Get-NetAdapter"]}},
            {"action": "aws:runShellScript", "inputs": {"runCommand": ["#!/bin/sh", "ip l\n"]}},
        ]
    }

    assert document_script(document) == "#!/bin/sh\nip l\n"
    with pytest.raises(ValueError, match="no aws:runShellScript step"):
        document_script({"mainSteps": document["mainSteps"][:1]})
