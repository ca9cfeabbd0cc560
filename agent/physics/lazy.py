"""Modules loaded on first use.

numpy (~10 MB of RSS) loads only when a decay fit or a QC analysis actually runs, not in every
agent that merely could run one.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """`name` as a module whose code runs on its first attribute access (importlib's LazyLoader).

    Already imported: the module itself. Missing: ImportError now, not at first use.
    """
    found = sys.modules.get(name)
    if found is not None:
        return found
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
