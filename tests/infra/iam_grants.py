"""Which role of a resolved template may do what: every statement a role carries, inline, from
the stack's managed policies, from AWS::IAM::Policy resources attached to it, and from the
AWS-managed policies whose content is known here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from enipin_lab.sandbox.deploy import Stack

# The AWS-managed policies a role may carry, with their content: SAM attaches this one to a
# state machine's role for X-Ray tracing.
AWS_MANAGED = {
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ],
            "Resource": "*",
        }
    ]
}


@dataclass(frozen=True)
class Grant:
    """One statement a role carries, and where it comes from: its policy and its place there."""

    role: str
    source: str
    statement: dict[str, Any]
    index: int = 0
    version: str = "2012-10-17"  # the document's; policy variables work from this one on

    @property
    def effect(self) -> str:
        return str(self.statement.get("Effect", ""))

    @property
    def sid(self) -> str:
        """The statement's Sid, or its policy and place there for one without."""
        return str(self.statement.get("Sid") or f"{self.source}#{self.index}")

    @property
    def key(self) -> tuple[str, str, str]:
        """(role, policy, Sid): names the statement among all of a template's."""
        return (self.role, self.source, self.sid)

    @property
    def actions(self) -> list[str]:
        return listed(self.statement.get("Action"))

    @property
    def resources(self) -> list[str]:
        return listed(self.statement.get("Resource"))

    def where(self) -> str:
        sid = self.statement.get("Sid") or f"statement {self.index}"
        return f"{self.role} ({self.source}, {sid})"


def listed(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def document_of(value: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return document


def roles(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"}


def grants(resources: dict[str, Any], stack: Stack) -> tuple[list[Grant], list[str]]:
    """Every Allow statement of every role (``statements``, the Allows only)."""
    found, unknown = statements(resources, stack)
    return [g for g in found if g.effect == "Allow"], unknown


def statements(resources: dict[str, Any], stack: Stack) -> tuple[list[Grant], list[str]]:
    """Every statement of every role, Allow and Deny: inline, from the stack's managed policies,
    from AWS::IAM::Policy resources attached to it, and from known AWS-managed policies; plus
    the managed policies nobody here knows the content of (each a violation)."""
    by_name = {stack.physical[k]: k for k in resources}
    found: list[Grant] = []
    unknown: list[str] = []
    for name, role in roles(resources).items():
        props = role["Properties"]
        for policy in props.get("Policies", []):
            found += _statements(name, f"inline {policy['PolicyName']}", policy["PolicyDocument"])
        for arn in props.get("ManagedPolicyArns", []):
            managed = _managed(arn, resources, stack)
            if managed is None:
                unknown.append(f"{name}: managed policy {arn} of unknown content")
            else:
                found += _statements(name, arn.rsplit("/", 1)[-1], managed)
    for logical, res in resources.items():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for role_name in res["Properties"].get("Roles", []):
                document = res["Properties"]["PolicyDocument"]
                found += _statements(by_name[role_name], logical, document)
    return found, unknown


def _managed(arn: str, resources: dict[str, Any], stack: Stack) -> Any:
    if arn in AWS_MANAGED:
        return {"Version": "2012-10-17", "Statement": AWS_MANAGED[arn]}
    for logical, res in resources.items():
        if stack.arns[logical] == arn and res["Type"] == "AWS::IAM::ManagedPolicy":
            return res["Properties"]["PolicyDocument"]
    return None


def _statements(role: str, source: str, document: Any) -> list[Grant]:
    doc = document_of(document)
    version = str(doc.get("Version", "2008-10-17"))
    listed_statements = doc.get("Statement", [])
    if isinstance(listed_statements, dict):  # a document may hold one statement unlisted
        listed_statements = [listed_statements]
    return [Grant(role, source, st, i, version) for i, st in enumerate(listed_statements)]
