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

DATA = ["*.yaml", "*.j2", "*.service", "*.target", "*.cfg", "*.html", "*.css", "*.js",
        "*.json", "*.sh", "py.typed"]

setup(
    packages=sorted(package_dir),
    package_dir=package_dir,
    package_data={name: DATA + ["**/*.j2", "**/*.yaml", "**/*.service", "**/*.html"]
                  for name in package_dir},
    include_package_data=True,
)
