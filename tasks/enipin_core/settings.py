"""Configuration: template Parameters -> function Environment -> these values, read once."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """What one launch needs to know; NotificationMetadata may override the per-group fields."""

    pool_tag_key: str
    pool_tag_value: str
    device_index: int
    poll_seconds: int
    pool_wait_seconds: int
    attach_wait_seconds: int
    agent_wait_seconds: int
    verify_wait_seconds: int
    heartbeat_timeout: int
    max_attach_candidates: int
    verify_document: str
    launch_failure_result: str
    detach_grace_seconds: int
    detach_wait_seconds: int
    warm_pool_keeps_eni: bool

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            pool_tag_key=os.environ.get("POOL_TAG_KEY", "Type"),
            pool_tag_value=os.environ.get("POOL_TAG_VALUE", "Dedicated-ENI"),
            device_index=_env_int("DEVICE_INDEX", 1),
            poll_seconds=_env_int("POLL_SECONDS", 5),
            pool_wait_seconds=_env_int("POOL_WAIT_SECONDS", 600),
            attach_wait_seconds=_env_int("ATTACH_WAIT_SECONDS", 60),
            agent_wait_seconds=_env_int("AGENT_WAIT_SECONDS", 600),
            verify_wait_seconds=_env_int("VERIFY_WAIT_SECONDS", 120),
            heartbeat_timeout=_env_int("HOOK_HEARTBEAT_TIMEOUT", 300),
            max_attach_candidates=_env_int("MAX_ATTACH_CANDIDATES", 5),
            verify_document=os.environ.get("VERIFY_DOCUMENT_NAME", "enipin-VerifyNic"),
            launch_failure_result=os.environ.get("LAUNCH_FAILURE_RESULT", "ABANDON"),
            detach_grace_seconds=_env_int("DETACH_GRACE_SECONDS", 30),
            detach_wait_seconds=_env_int("DETACH_WAIT_SECONDS", 120),
            warm_pool_keeps_eni=os.environ.get("WARM_POOL_ENI", "RELEASE") == "KEEP",
        )

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        return cls(**data)


def managed_groups() -> frozenset[str]:
    """Groups this deployment may act on; an event from any other group is ignored."""
    raw = os.environ.get("MANAGED_GROUPS", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())
