"""How many groups one stack serves: the most GroupName may list and still deploy within AWS's
quotas, measured on the template CloudFormation creates (SAM transform, Fn::ForEach expanded:
AWS applies its quotas to that resultant template) for the worst case, names as long as
GroupName's AllowedPattern allows, all distinct.

Every group adds two AWS::IAM::Policy resources (CompleteLifecycleActionPolicy<group>, inline on
three roles; HeartbeatPolicy<group>, inline on RecordHeartbeatRole and ReconcilerRole) and two
lifecycle hooks, and lengthens the aws:autoscaling:groupName condition lists of five roles'
policies, MANAGED_GROUPS (every function's environment) and the GroupName parameter itself.
The binding limit is IAM's 10,240 characters of inline policy per role, on ReconcilerRole: its
own policy lists every group and it carries every group's heartbeat policy.

ARNs are measured as long as in the longest partition and Region (``resolve`` answers in
us-east-1 of partition aws): the same stack must deploy in GovCloud and in ap-southeast-5 too.

AWS's pages (docs/aws-contract.md, "Deploy-time limits", has the figures):
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html
https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/intrinsic-function-reference-foreach.html
https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from enipin_lab.sandbox.base import REGION
from enipin_lab.sandbox.sam import resolve, transform
from enipin_lab.sandbox.template import load

TEMPLATE = Path(__file__).parents[2] / "infra" / "template.yaml"

# The most groups one stack serves, with names of the longest length GroupName allows. The
# largest count that fits is 20 itself (21 exceed ReconcilerRole's inline policy limit).
MAX_GROUPS = 20

# AWS's quotas. IAM counts policy characters without white space (IAM quotas page).
ROLE_INLINE_POLICIES = 10_240  # IAM: aggregate of a role's inline policies
MANAGED_POLICY = 6_144  # IAM: one managed policy
POLICY_NAME = 128  # IAM: a policy's name
EVENT_PATTERN = 2_048  # EventBridge: an event pattern, characters (default, adjustable)
RESOURCES = 500  # CloudFormation: resources in a template
TEMPLATE_BODY = 1_000_000  # CloudFormation: template body in an S3 object, 1 MB (as 10^6)
OUTPUTS = 200  # CloudFormation: outputs in a template
PARAMETERS = 200  # CloudFormation: parameters in a template
PARAMETER_VALUE = 4_096  # CloudFormation: one parameter value, bytes
LOGICAL_ID = 255  # CloudFormation: a resource's name (logical id)
LAMBDA_ENVIRONMENT = 4_096  # Lambda: all of a function's environment variables, 4 KB

# The longest partition (aws-us-gov) and the longest Region code (14 characters, as
# ap-southeast-5 or cn-northwest-1) AWS's standard partitions have, for ARNs at their longest.
WIDEST_PARTITION, WIDEST_REGION = "aws-us-gov", "ap-southeast-5"


@dataclass(frozen=True)
class Measure:
    """One quota, one thing it applies to, and that thing's size in the quota's unit."""

    limit: str
    subject: str
    size: int
    maximum: int

    @property
    def fits(self) -> bool:
        return self.size <= self.maximum

    def __str__(self) -> str:
        return f"{self.limit} ({self.maximum:,}): {self.subject} measures {self.size:,}"


def group_names(count: int) -> list[str]:
    """``count`` distinct names as long as GroupName's AllowedPattern allows, all of them
    alphanumeric so that the logical ids Fn::ForEach makes of them are the longest too."""
    longest = _longest_group_name()
    return [f"g{i:04d}".ljust(longest, "x") for i in range(count)]


def _longest_group_name() -> int:
    pattern = load(TEMPLATE)["Parameters"]["GroupName"]["AllowedPattern"]
    found = re.search(r"\{1,(\d+)\}\$$", pattern)
    assert found, f"GroupName's AllowedPattern {pattern} bounds no length"
    return int(found[1])


def _widest(text: str) -> str:
    """``text`` with every ARN in the longest partition and Region."""
    return text.replace("arn:aws:", f"arn:{WIDEST_PARTITION}:").replace(
        f":{REGION}:", f":{WIDEST_REGION}:"
    )


def _chars(document: Any) -> int:
    """A policy document's characters as IAM counts them: JSON without white space, ARNs
    at their longest."""
    parsed = json.loads(document) if isinstance(document, str) else document
    return len(_widest(json.dumps(parsed, separators=(",", ":"))))


@cache
def measures(count: int) -> tuple[Measure, ...]:
    """Every quota the template meets, measured with ``count`` groups of the longest names."""
    parameters = {"GroupName": ",".join(group_names(count))}
    cfn = transform(TEMPLATE, parameters)
    resources, stack = resolve(cfn, parameters)
    return (
        *_cloudformation(cfn, parameters),
        *_iam(resources, {stack.physical[k]: k for k in resources}),
        *_functions_and_rules(resources),
    )


def _cloudformation(cfn: dict[str, Any], parameters: dict[str, str]) -> list[Measure]:
    template = "the template"
    found = [
        Measure("CloudFormation resources", template, len(cfn["Resources"]), RESOURCES),
        Measure("CloudFormation template body", template, len(json.dumps(cfn)), TEMPLATE_BODY),
        Measure("CloudFormation outputs", template, len(cfn.get("Outputs", {})), OUTPUTS),
        Measure("CloudFormation parameters", template, len(cfn["Parameters"]), PARAMETERS),
    ]
    found += [
        Measure("CloudFormation parameter value", k, len(v.encode()), PARAMETER_VALUE)
        for k, v in parameters.items()
    ]
    found += [Measure("CloudFormation logical id", k, len(k), LOGICAL_ID) for k in cfn["Resources"]]
    return found


def _iam(resources: dict[str, Any], logical_of: dict[str, str]) -> list[Measure]:
    """Each role's inline policies together (its own and every AWS::IAM::Policy naming it),
    each managed policy, each policy's name."""
    inline: Counter[str] = Counter()
    names: dict[str, str] = {}
    found: list[Measure] = []
    for logical, res in resources.items():
        props = res["Properties"]
        if res["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                inline[logical] += _chars(policy["PolicyDocument"])
                names[f"{logical} {policy['PolicyName']}"] = policy["PolicyName"]
        elif res["Type"] == "AWS::IAM::Policy":
            for role in props["Roles"]:
                inline[logical_of[role]] += _chars(props["PolicyDocument"])
            names[logical] = props["PolicyName"]
        elif res["Type"] == "AWS::IAM::ManagedPolicy":
            size = _chars(props["PolicyDocument"])
            found.append(Measure("IAM managed policy", logical, size, MANAGED_POLICY))
    found += [
        Measure("IAM role inline policies", k, v, ROLE_INLINE_POLICIES) for k, v in inline.items()
    ]
    found += [Measure("IAM policy name", k, len(v), POLICY_NAME) for k, v in names.items()]
    return found


def _functions_and_rules(resources: dict[str, Any]) -> list[Measure]:
    """Each function's environment, as JSON (Globals' variables are merged in by SAM), and each
    rule's event pattern."""
    found: list[Measure] = []
    for logical, res in resources.items():
        props = res["Properties"]
        if res["Type"] == "AWS::Lambda::Function":
            variables = props.get("Environment", {}).get("Variables", {})
            size = len(_widest(json.dumps(variables, separators=(",", ":"))))
            found.append(Measure("Lambda environment variables", logical, size, LAMBDA_ENVIRONMENT))
        elif res["Type"] == "AWS::Events::Rule" and "EventPattern" in props:
            size = len(json.dumps(props["EventPattern"], separators=(",", ":")))
            found.append(Measure("EventBridge event pattern", logical, size, EVENT_PATTERN))
    return found


def largest(count: int, limit: str) -> Measure:
    return max((m for m in measures(count) if m.limit == limit), key=lambda m: m.size)


# ---- the tests ---------------------------------------------------------------------------


def test_the_most_groups_with_the_longest_names_deploy_within_every_quota() -> None:
    # GIVEN the stack with MAX_GROUPS groups of the longest names GroupName allows
    found = measures(MAX_GROUPS)
    # THEN every quota holds, and each kind of quota was measured at all
    over = [str(m) for m in found if not m.fits]
    names = f"{MAX_GROUPS} groups of {_longest_group_name()} characters"
    assert over == [], f"with {names}, over the quota: " + "; ".join(over)
    assert {m.limit for m in found} == {
        "CloudFormation parameter value",
        "CloudFormation resources",
        "CloudFormation template body",
        "CloudFormation outputs",
        "CloudFormation parameters",
        "CloudFormation logical id",
        "IAM policy name",
        "IAM managed policy",
        "IAM role inline policies",
        "EventBridge event pattern",
        "Lambda environment variables",
    }
    # AND every function's environment and every role of a group's policies were measured
    roles_measured = {m.subject for m in found if m.limit == "IAM role inline policies"}
    assert {"ReconcilerRole", "RecordHeartbeatRole", "CompleteLaunchRole"} <= roles_measured
    functions = [m for m in found if m.limit == "Lambda environment variables"]
    assert len(functions) >= 19 and all(m.size > MAX_GROUPS * 100 for m in functions)


def test_the_rules_pattern_does_not_grow_with_the_groups() -> None:
    # GIVEN the lifecycle rule's pattern with one group and with MAX_GROUPS
    one = [m for m in measures(1) if m.limit == "EventBridge event pattern"]
    most = [m for m in measures(MAX_GROUPS) if m.limit == "EventBridge event pattern"]
    # THEN it is the one pattern of the stack, as long with either
    assert [m.subject for m in one] == ["LifecycleActionRule"]
    assert one == most


def test_one_group_more_exceeds_reconcilerroles_inline_policy_limit_and_nothing_else() -> None:
    # GIVEN the stack with one group more than MAX_GROUPS
    found = measures(MAX_GROUPS + 1)
    # THEN the binding quota is exceeded, and only it: ReconcilerRole's inline policies
    over = [(m.limit, m.subject) for m in found if not m.fits]
    assert over == [("IAM role inline policies", "ReconcilerRole")], [
        str(m) for m in found if not m.fits
    ]
    # AND at MAX_GROUPS it is the quota closest to its maximum
    binding = largest(MAX_GROUPS, "IAM role inline policies")
    assert binding.subject == "ReconcilerRole"
    assert max(measures(MAX_GROUPS), key=lambda m: m.size / m.maximum) == binding
