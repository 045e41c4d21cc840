"""How the CLI talks to people: aligned tables, ``--json``, progress on stderr, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import click

from enipin.errors import OperatorError


class OneLine(click.ClickException):
    """An ``OperatorError`` as click shows it: ``enipin: <message>``, with its exit status."""

    exit_code = OperatorError.exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"enipin: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    raise OperatorError(message)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Columns sized to their content; the header is the column names upper-cased."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_json_default)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@contextmanager
def progress(items: Iterable[Any], label: str, length: int) -> Iterator[Iterable[Any]]:
    """A progress bar on stderr when it is a terminal; silent otherwise (pipes, tests)."""
    if sys.stderr.isatty():
        with click.progressbar(items, label=label, length=length, file=sys.stderr) as bar:
            yield bar
    else:
        yield items
