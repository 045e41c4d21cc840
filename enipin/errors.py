"""The operations layer's one error: a problem the operator can fix, said in one line."""

from __future__ import annotations


class OperatorError(Exception):
    """What went wrong and how to fix it; ``enipin`` prints ``enipin: <message>``, exit 2."""

    exit_code = 2
