"""How the CLI prints what it got: ``-f table|json|value|yaml`` and ``-c COLUMN``, as `openstack` does.

A listing is rows under column names; a single resource is its fields. ``table`` draws them
(a listing in columns, a resource as Field/Value lines), ``json`` and ``yaml`` give the same
data to programs (a list of objects, or one object), ``value`` gives bare values (a row per line,
space-separated; a resource's values a line each), for shell scripts. ``-c`` (repeatable) keeps
only those columns or fields, in that order; an unknown one is an error naming the known ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TextIO

import yaml

Format = Literal["table", "json", "value", "yaml"]
FORMATS: tuple[Format, ...] = ("table", "json", "value", "yaml")


class UnknownColumn(ValueError):
    """A ``-c`` that names no column of the output."""


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``-f/--format`` and ``-c/--column`` on a command that prints a listing or a resource."""
    parser.add_argument(
        "-f", "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "-c", "--column", action="append", default=[], help="only this column or field (repeatable)"
    )


def _selected(columns: Sequence[str], wanted: Sequence[str]) -> list[str]:
    unknown = [column for column in wanted if column not in columns]
    if unknown:
        named = ", ".join(map(repr, unknown))
        raise UnknownColumn(f"no column {named}; the columns are: {', '.join(columns)}")
    return list(wanted) or list(columns)


def _cell(value: Any) -> str:
    """A value as one table cell or ``value`` field: text as is, structures as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def _table(rows: list[list[str]], header: list[str], out: TextIO) -> None:
    widths = [max([len(name)] + [len(line) for row in rows for line in row[i].splitlines() or [""]])
              for i, name in enumerate(header)]  # fmt: skip
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"
    print(rule, file=out)
    names = [name.ljust(width) for name, width in zip(header, widths, strict=True)]
    print("| " + " | ".join(names) + " |", file=out)
    print(rule, file=out)
    for row in rows:
        cells = [cell.splitlines() or [""] for cell in row]
        for line in range(max(len(lines) for lines in cells)):
            parts = [(lines[line] if line < len(lines) else "").ljust(width)
                     for lines, width in zip(cells, widths, strict=True)]  # fmt: skip
            print("| " + " | ".join(parts) + " |", file=out)
    print(rule, file=out)


def print_listing(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    format: Format = "table",
    only: Sequence[str] = (),
    out: TextIO | None = None,
) -> None:
    """Rows (each a mapping of column name to value) in ``format``; ``only``: the ``-c`` columns.

    :raises UnknownColumn: ``only`` names a column that is not among ``columns``.
    """
    out = out or sys.stdout
    shown = _selected(columns, only)
    records = [{c: row.get(c) for c in shown} for row in rows]
    if format == "json":
        print(json.dumps(records, indent=2), file=out)
    elif format == "yaml":
        print(yaml.safe_dump(records, sort_keys=False), end="", file=out)
    elif format == "value":
        for row in rows:
            print(" ".join(_cell(row.get(c)) for c in shown), file=out)
    else:
        _table([[_cell(row.get(c)) for c in shown] for row in rows], shown, out)


def print_resource(
    resource: Mapping[str, Any],
    *,
    format: Format = "table",
    only: Sequence[str] = (),
    out: TextIO | None = None,
) -> None:
    """One resource's fields (sorted by name) in ``format``; ``only``: the ``-c`` fields.

    :raises UnknownColumn: ``only`` names a field the resource does not have.
    """
    out = out or sys.stdout
    shown = _selected(sorted(resource), only)
    if format == "json":
        print(json.dumps({field: resource[field] for field in shown}, indent=2), file=out)
    elif format == "yaml":
        print(yaml.safe_dump({field: resource[field] for field in shown}, sort_keys=False), end="", file=out)
    elif format == "value":
        for field in shown:
            print(_cell(resource[field]), file=out)
    else:
        _table([[field, _cell(resource[field])] for field in shown], ["Field", "Value"], out)
