"""The handler tables of docs/ARCHITECTURE.md, made from the API modules' registry (``bus.api``).

    python -m deploy.apidoc            # print the tables
    python -m deploy.apidoc --write    # replace them in docs/ARCHITECTURE.md

tests/test_architecture.py fails when the document's tables are not these.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from pathlib import Path

import api
from bus.api import Method, ServiceAPI

BEGIN = "<!-- handler tables: made by `python -m deploy.apidoc --write` from api/; do not edit -->"
END = "<!-- end of handler tables -->"
DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md"


def api_modules() -> list[str]:
    return [f"api.{module.name}" for module in pkgutil.iter_modules(api.__path__) if module.name != "fields"]


def facets_of(module_name: str) -> list[type[ServiceAPI]]:
    """The facets a module declares, in the order it declares them."""
    module = importlib.import_module(module_name)
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ServiceAPI) and value.__module__ == module_name
    ]
    return sorted(found, key=lambda facet: inspect.getsourcelines(facet)[1])


def _arguments(method: Method) -> str:
    written = method.function.__annotations__
    parts = []
    for parameter in list(method.signature.parameters.values())[1:]:
        part = f"{parameter.name}: {written.get(parameter.name, 'Any')}"
        if parameter.default is not inspect.Parameter.empty:
            part += f" = {parameter.default!r}"
        parts.append(part)
    return ", ".join(parts)


def _first_line(method: Method) -> str:
    doc = inspect.getdoc(method.function) or ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def tables() -> str:
    """One table per API module that declares facets: each facet's own methods (``ping``, on every
    actor, left out); a module of topics only (``api.metrics``) has none."""
    out = [BEGIN, ""]
    for module_name in api_modules():
        if not facets_of(module_name):
            continue
        module = importlib.import_module(module_name)
        path = module_name.replace(".", "/") + ".py"
        title = (module.__doc__ or "").strip().split("\n")[0]
        out += [f"#### `{path}` — {title}", ""]
        out += ["| facet (address) | method | | arguments | reply | policy | what it does |"]
        out += ["|---|---|---|---|---|---|---|"]
        for facet in facets_of(module_name):
            for name, method in facet.api_methods.items():
                if method.facet is not facet:
                    continue
                reply = method.function.__annotations__.get("return", "None")
                out.append(
                    f"| `{facet.__name__}` (`{facet.address}`) | `{name}` | {method.kind} |"
                    f" `{_arguments(method)}` | `{reply}` | {method.policy or ''} | {_first_line(method)} |"
                )
        out.append("")
    out.append(END)
    return "\n".join(out)


def replaced(document: str, generated: str) -> str:
    """``document`` with its handler tables replaced by ``generated``.

    :raises ValueError: the document has no place for them (the two markers).
    """
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOCUMENT} has no {BEGIN!r} ... {END!r} section")
    return document[:start] + generated + document[end + len(END) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"replace the tables in {DOCUMENT}")
    args = parser.parse_args()
    generated = tables()
    if args.write:
        DOCUMENT.write_text(replaced(DOCUMENT.read_text(), generated))
    else:
        print(generated)


if __name__ == "__main__":
    main()
