"""The shape of the code: services reach each other only through typed APIs, layers go one way.

* No code outside ``bus/`` and ``api/`` names an actor method with a string (``"conductor.get_x"``,
  ``f"node.{host}.{method}"``) or hands a string subject to ``call``/``cast``: callers use the
  typed clients of ``api/`` (bus.api), so "who calls this handler" is a search for its name.
* The import contracts of pyproject.toml (import-linter): bus < runtime < api < actors | node |
  gateway < deploy, the SDK/CLI importing nothing of the server, the actors independent of each
  other, and no import cycle anywhere.
* Every facet's handler table in docs/ARCHITECTURE.md is the registry's (``bus.api``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import api
from bus.api import ServiceAPI

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("actors", "node", "gateway", "runtime", "deploy", "aiostack", "bench")
SENDERS = frozenset({"call", "cast", "call_patiently", "request", "gather"})
SUBJECT = re.compile(r"^[a-z_]+\.[a-z_{]")


def facets() -> list[type[ServiceAPI]]:
    """Every facet the API modules declare."""
    for module in pkgutil.iter_modules(api.__path__):
        importlib.import_module(f"api.{module.name}")
    found: list[type[ServiceAPI]] = []
    pending = list(ServiceAPI.__subclasses__())
    while pending:
        klass = pending.pop()
        pending.extend(klass.__subclasses__())
        if klass.__module__.startswith("api.") and klass not in found:
            found.append(klass)
    return sorted(found, key=lambda facet: (facet.__module__, facet.__name__))


def method_subjects() -> tuple[set[str], set[str]]:
    """``address.method`` of every fixed address, and the methods of addressed actors (``node.{host}``)."""
    fixed, addressed = set(), set()
    for facet in facets():
        for name in facet.api_methods:
            if "{" in facet.address:
                addressed.add(f"{facet.address.split('.', 1)[0]}:{name}")
            else:
                fixed.add(f"{facet.address}.{name}")
    return fixed, addressed


def subject_strings(source: str, fixed: set[str], addressed: set[str]) -> Iterator[tuple[int, str]]:
    """Where ``source`` names an actor method with a string, or hands a string subject to the bus."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            head, _, method = text.rpartition(".")
            if text in fixed or (head.count(".") == 1 and f"{head.split('.')[0]}:{method}" in addressed):
                yield node.lineno, f"names the actor method {text!r}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in SENDERS and _is_string(node.args[0]) and _on_a_bus(node.func.value):
                yield node.lineno, f"sends to a string subject with .{node.func.attr}()"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in SENDERS
            and any(_looks_like_a_subject(argument) for argument in node.args)
        ):
            yield node.lineno, f"sends to a string subject with {node.func.id}()"


def _is_string(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _looks_like_a_subject(node: ast.expr) -> bool:
    """``"net.get_port"``, ``f"net.create_{kind}"`` (not ``"POST"``, not ``f"{url}/path"``)."""
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(SUBJECT.match(node.value))


def _on_a_bus(receiver: ast.expr) -> bool:
    """``bus.call``, ``self.bus.call``, ``request.app[BUS].call``: a receiver that names a bus."""
    text = ast.unparse(receiver).lower()
    return "bus" in text


def product_files() -> Iterator[Path]:
    for folder in CHECKED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_code_outside_the_bus_and_the_apis_names_an_actor_method_with_a_string() -> None:
    fixed, addressed = method_subjects()
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in product_files()
        for line, what in subject_strings(path.read_text(), fixed, addressed)
    ]
    assert not found, "use the typed clients of api/ instead:\n" + "\n".join(found)


def test_the_subject_check_finds_what_it_looks_for() -> None:
    fixed, addressed = {"conductor.get_build_request"}, {"node:stop_instance"}
    planted = (
        "async def f(bus, host, method):\n"
        "    await bus.call('conductor.get_build_request', {})\n"
        "    await self.bus.cast(f'node.{host}.{method}', {})\n"
        "    subject = 'node.node-1.stop_instance'\n"
        "    await bus.call_patiently(subject, {}, within=1)\n"
        "    await bus.publish('evt.x', {})\n"
        "    event = 'node.up'\n"
        "    await call(request, f'net.create_{singular}', {})\n"
        "    await session.request('GET', '/compute/v2.1/servers')\n"
        "    await call(session, 'POST', f'{url}/identity/v3/auth/tokens')\n"
    )
    assert sorted(line for line, _ in subject_strings(planted, fixed, addressed)) == [2, 2, 3, 4, 8]


PROCESS_CODE = {
    "identity": ("actors/identity",),
    "conductor": ("actors/conductor",),
    "scheduler": ("actors/scheduler.py", "actors/orphans.py"),
    "image": ("actors/image.py", "actors/placement.py"),
    "net": ("actors/net", "actors/orphans.py", "actors/placement.py"),
    "volume": ("actors/volume.py", "actors/orphans.py", "actors/placement.py"),
    "node": ("node",),
    "gateway": ("gateway",),
}
"""The code each kind of process runs (every one also runs runtime/auth.py: token validation)."""


def clients_made(source: str) -> set[str]:
    """The names of the facets a module makes clients of: ``Facet.client(...)``,
    ``client(request, Facet)`` (the gateway), ``patient(Facet, bus)`` (the node)."""
    made = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            if function.attr == "client":
                made.add(function.value.id)
        elif isinstance(function, ast.Name) and function.id == "client" and len(node.args) == 2:
            made.update(arg.id for arg in node.args[1:] if isinstance(arg, ast.Name))
        elif isinstance(function, ast.Name) and function.id == "patient" and node.args:
            made.update(arg.id for arg in node.args[:1] if isinstance(arg, ast.Name))
    return made


def _python_files(place: Path) -> list[Path]:
    return sorted(place.rglob("*.py")) if place.is_dir() else [place]


def test_each_process_may_send_to_exactly_the_facets_its_code_makes_clients_of() -> None:
    from deploy.credentials import KINDS
    from runtime.auth import TokenValidation

    by_name = {facet.__name__: facet for facet in facets()}
    for kind, places in PROCESS_CODE.items():
        files = [path for place in places for path in _python_files(ROOT / place)]
        names = set().union(*(clients_made(path.read_text()) for path in files))
        made = {by_name[name] for name in names if name in by_name} | {TokenValidation}
        allowed = {*KINDS[kind].uses, TokenValidation}
        assert made == allowed, (
            f"{kind}: its code makes clients of {sorted(f.__name__ for f in made)}, its NATS user may send to"
            f" {sorted(f.__name__ for f in allowed)}"
        )


def test_the_import_contracts_hold() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_handler_tables_of_the_architecture_document_are_the_registrys() -> None:
    from deploy import apidoc

    document = apidoc.DOCUMENT.read_text()
    assert apidoc.replaced(document, apidoc.tables()) == document, (
        "docs/ARCHITECTURE.md's handler tables are stale: run `python -m deploy.apidoc --write`"
    )
