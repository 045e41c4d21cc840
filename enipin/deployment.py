"""The deployed stack, found by name: which state machines, which group, which pool tag.

Everything the operator commands need comes from the stack's Outputs, so the CLI works with any
account and Region ``sam deploy`` put enipin in (and with the sandbox, which records its deploy
the same way).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
)

from enipin.errors import OperatorError
from enipin_core.names import KINDS

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_STACK = "enipin"
# Operator commands share the account's API rate with the workflows: back off, do not storm.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 6})


@dataclass
class Deployment:
    session: boto3.session.Session
    stack: str
    outputs: dict[str, str]
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def client(self, service: str, config: Config | None = None) -> Any:
        """The service's client, with ``config`` merged over the operator default."""
        key = f"{service}:{id(config) if config else ''}"
        if key not in self._clients:
            merged = CLIENT_CONFIG.merge(config) if config else CLIENT_CONFIG
            self._clients[key] = self.session.client(service, config=merged)
        return self._clients[key]

    def output(self, key: str) -> str:
        if key not in self.outputs:
            raise OperatorError(f"stack {self.stack} has no output {key}: is it an enipin stack?")
        return self.outputs[key]

    @property
    def group_names(self) -> list[str]:
        return [g.strip() for g in self.output("ManagedGroupNames").split(",") if g.strip()]

    @property
    def pool_tag(self) -> tuple[str, str]:
        return self.output("PoolTagKey"), self.output("PoolTagValue")

    def state_machines(self) -> dict[str, str]:
        """Short transition name (launch, terminate) -> its workflow's ARN, from the outputs."""
        return {kind: self.output(f"{kind.title()}StateMachineArn") for kind in KINDS.values()}


def session(profile: str | None, region: str | None) -> boto3.session.Session:
    try:
        sess = boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise OperatorError(f"profile {profile!r} is not in your AWS config") from None
    if not sess.region_name:
        raise OperatorError("no AWS Region: pass --region or set AWS_REGION")
    known = {
        region
        for partition in sess.get_available_partitions()
        for region in sess.get_available_regions("stepfunctions", partition)
    }
    if sess.region_name not in known:
        raise OperatorError(f"unknown AWS Region {sess.region_name!r}")
    return sess


def connect(profile: str | None, region: str | None, stack: str) -> Deployment:
    sess = session(profile, region)
    with aws_errors():
        try:
            found = sess.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        except ClientError as exc:
            if "does not exist" in str(exc):
                raise OperatorError(
                    f"stack {stack!r} not found in {sess.region_name} (pass --stack NAME)"
                ) from None
            raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs", [])}
    return Deployment(sess, stack, outputs)


@contextmanager
def aws_errors() -> Iterator[None]:
    """botocore's exceptions become one line an operator can act on."""
    try:
        yield
    except NoCredentialsError:
        raise OperatorError(
            "no AWS credentials found: run `aws configure`, set AWS_PROFILE or pass --profile"
        ) from None
    except NoRegionError:
        raise OperatorError("no AWS Region: pass --region or set AWS_REGION") from None
    except EndpointConnectionError as exc:
        raise OperatorError(f"cannot reach AWS: {exc}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise OperatorError(
            f"{exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
        ) from None
    except BotoCoreError as exc:
        raise OperatorError(str(exc)) from None


def with_aws_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with aws_errors():
            return fn(*args, **kwargs)

    return wrapper
