"""The arithmetic of ``enipin doctor``'s rules, on a group shaped exactly as
DescribeAutoScalingGroups answers it (the sandbox seeds the refresh rule end to end in
``tests/workflow/test_instance_refresh.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from enipin.doctor import FAIL, PASS, _allowed, _refresh_finding
from enipin.pool import Group, PoolEni

AZS = ("us-east-1a", "us-east-1b", "us-east-1c")


def group(desired: int, policy: dict[str, int] | None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "AutoScalingGroupName": "web",
        "MinSize": 0,
        "MaxSize": 12,
        "DesiredCapacity": desired,
        "Instances": [],
    }
    if policy is not None:
        raw["InstanceMaintenancePolicy"] = policy
    return raw


def free_enis(per_az: int) -> list[PoolEni]:
    return [
        PoolEni(f"eni-{az}-{i}", az, f"subnet-{az}", "0e:00:00:00:00:00", "10.0.0.1", "available")
        for az in AZS
        for i in range(per_az)
    ]


@pytest.mark.parametrize(
    ("policy", "free_per_az", "verdict"),
    [
        (None, 0, PASS),  # no policy: terminate first, no spare needed
        ({"MinHealthyPercentage": 90, "MaxHealthyPercentage": 100}, 0, PASS),
        # launch first, 12 desired at 200%: a batch of 12, 4 per AZ
        ({"MinHealthyPercentage": 100, "MaxHealthyPercentage": 200}, 3, FAIL),
        ({"MinHealthyPercentage": 100, "MaxHealthyPercentage": 200}, 4, PASS),
        # 125% of 12: a batch of 3, 1 per AZ
        ({"MinHealthyPercentage": 100, "MaxHealthyPercentage": 125}, 1, PASS),
        # 110% of 12 is 13.2: a batch of 1 (rounded down), 1 free in any AZ it lands in
        ({"MinHealthyPercentage": 100, "MaxHealthyPercentage": 110}, 1, PASS),
        ({"MinHealthyPercentage": 100, "MaxHealthyPercentage": 110}, 0, FAIL),
    ],
)
def test_a_launch_first_batch_needs_that_many_free_enis_per_az(
    policy: dict[str, int] | None, free_per_az: int, verdict: str
) -> None:
    found = _refresh_finding(group(12, policy), Group("web", 12, AZS), free_enis(free_per_az))
    assert found.verdict == verdict, found
    if verdict == FAIL:
        assert "MaxHealthyPercentage" in found.fix


def test_allowed_actions_read_strings_lists_and_skip_deny() -> None:
    doc = {
        "Statement": [
            {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": "*"},
            {"Effect": "Allow", "Action": ["ec2messages:*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "ssmmessages:*", "Resource": "*"},
        ]
    }
    assert _allowed(doc) == ["ssm:UpdateInstanceInformation", "ec2messages:*"]
