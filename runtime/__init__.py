"""lockgate.runtime: the traffic manager.

The proxy's per-request modules are normally compiled (mypyc, see setup.py).
``LOCKGATE_PURE_PYTHON=1`` in the environment makes this package load their
Python sources instead: for py-spy, which cannot see into compiled code, and
for tests that hold the sources to the same behaviour.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

PURE_PYTHON_ENV = "LOCKGATE_PURE_PYTHON"


class _SourcesFirst:
    """Finds a ``lockgate.runtime`` module's ``.py`` even where a compiled one sits beside it."""

    @staticmethod
    def find_spec(fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(__name__ + ".") or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for folder in path:
            source = os.path.join(folder, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def pure_python() -> bool:
    """True if this process runs the proxy from its Python sources."""
    return os.environ.get(PURE_PYTHON_ENV) == "1"


if pure_python() and not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourcesFirst())


def core_build() -> str:
    """"compiled" or "python": how this process runs the proxy's per-request code."""
    from lockgate.runtime.proxy import http_transport

    return "python" if (http_transport.__file__ or "").endswith(".py") else "compiled"
