"""Map the top-level part folders into the ``lockgate`` namespace.

``src/lockgate`` is the thin core (CLI root, ``run()``, HTTP client); the three
parts live in top-level folders and install as ``lockgate.image``,
``lockgate.firstboot`` and ``lockgate.runtime``. Every subpackage is listed
explicitly so a wheel and an editable install see the same tree.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
PARTS = {"lockgate": "src/lockgate", "lockgate.image": "image",
         "lockgate.firstboot": "firstboot", "lockgate.runtime": "runtime"}

package_dir: dict[str, str] = {}
for name, folder in PARTS.items():
    package_dir[name] = folder
    for sub in find_packages(str(HERE / folder)):
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

# Data files ship with their package, including folders without an __init__.py
# (units/, templates/, profiles/).
DATA_SUFFIXES = ["yaml", "j2", "service", "target", "cfg", "html", "css", "js", "json", "sh", "typed"]
DATA = [f"**/*.{suffix}" for suffix in DATA_SUFFIXES]

setup(
    packages=sorted(package_dir),
    package_dir=package_dir,
    package_data={name: DATA for name in package_dir},
    include_package_data=True,
)
