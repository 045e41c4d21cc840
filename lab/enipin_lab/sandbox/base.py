"""What every fidelity adaptation of moto shares: where moto's state lives and how it plugs in."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Protocol

from moto.core import DEFAULT_ACCOUNT_ID

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
REGION = "us-east-1"


class Adaptation(Protocol):
    """A documented AWS behaviour that plain moto lacks, put back by patching moto.

    ``install`` enters its patches on ``stack`` (``unittest.mock.patch.object``)
    so that closing the stack restores moto exactly. An adaptation reads moto's
    live state and never forces a result.
    """

    def install(self, stack: ExitStack) -> None: ...
