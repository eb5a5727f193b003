"""Install the lockgate packages from their folders, compiling the proxy core.

``src/lockgate`` is the thin core (CLI root, ``run()``, HTTP client); the three
parts live in top-level folders and install as ``lockgate.image``,
``lockgate.firstboot`` and ``lockgate.runtime`` (scripts/layout.py says
which is where). Every subpackage is listed explicitly so a wheel and an
editable install see the same tree.

The proxy's per-request modules (``layout.NATIVE``) are compiled to C with
mypyc: their classes become C structs and calls between them C calls, and the
proxy spends ~15 % less CPU per HTTP request (docs/benchmarks.md). They are
plain, fully typed Python too, and ``LOCKGATE_COMPILE=0`` installs them as such.
"""

import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
os.chdir(HERE)  # paths below are relative to the checkout, as pip runs us
sys.path.insert(0, str(HERE / "scripts"))
import layout  # noqa: E402  (scripts/layout.py: standard library only)

package_dir: dict[str, str] = {}
for name, folder in layout.PARTS.items():
    if not (HERE / folder).is_dir():
        # The image build's copy for the appliance's wheel leaves the build-host-only
        # image/ out (lockgate.image.build.install.HOST_ONLY); a checkout has every part.
        continue
    package_dir[name] = folder
    for sub in find_packages(str(HERE / folder)):
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

# Data files ship with their package, including folders without an __init__.py
# (units/, templates/, profiles/).
DATA_SUFFIXES = ["yaml", "j2", "service", "target", "cfg", "html", "css", "js", "json", "sh", "typed"]
DATA = [f"**/*.{suffix}" for suffix in DATA_SUFFIXES]


def native_extensions() -> list:
    if not layout.compile_wanted():
        return []
    from mypyc.build import mypycify  # mypy is a build requirement (pyproject.toml)

    # Compiled from the link tree, where mypy sees them as lockgate.runtime.*. Relative
    # paths and no debug info: the same sources give the same bytes wherever they are
    # built (the image is reproducible); tracebacks name build/typetree/lockgate/...
    layout.typetree(HERE / layout.TYPETREE)
    paths = [f"{layout.TYPETREE}/{module.replace('.', '/')}.py" for module in layout.NATIVE]
    return mypycify(paths, group_name=layout.NATIVE_GROUP, debug_level="0")


setup(
    packages=sorted(package_dir),
    package_dir=package_dir,
    package_data={name: DATA for name in package_dir},
    include_package_data=True,
    ext_modules=native_extensions(),
)
