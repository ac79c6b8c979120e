"""One module per parser family, each defining ``FAMILY`` (a :class:`fuzz.harness.Family`).

Modules are discovered, not listed: adding a family is adding a file here.
"""

from __future__ import annotations

import importlib
import pkgutil

from fuzz.harness import Family


def all_families() -> dict[str, Family]:
    """Every family defined under this package, by name, in name order."""
    found: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        family = importlib.import_module(f"{__name__}.{info.name}").FAMILY
        found[family.name] = family
    return found
