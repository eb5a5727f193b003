"""Where first boot gets its user-data: one source per platform.

``get_source(spec)`` builds the source a ``--source`` value names
(``auto``, ``ec2``, ``gce``, ``azure``, ``nocloud``, ``file:PATH``);
``discover()`` asks each platform's cheap, local ``detect()`` in the order
nocloud, azure, gce, ec2 and returns the first that recognises the machine.
NoCloud goes first because a seed volume is an explicit choice by whoever
attached it, whatever cloud the VM runs on. Modules are imported only when
needed, so first boot loads one platform's code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lockgate.firstboot.datasources.base import Datasource, DatasourceError, InstanceData

SOURCES = {  # name -> (module, class)
    "nocloud": ("nocloud", "NoCloudSource"),
    "azure": ("azure", "AzureSource"),
    "gce": ("gce", "GceSource"),
    "ec2": ("ec2", "Ec2Source"),
}
DETECT_ORDER = ("nocloud", "azure", "gce", "ec2")

__all__ = ["DETECT_ORDER", "Datasource", "DatasourceError", "InstanceData", "discover",
           "get_source"]


def _build(name: str, options: dict[str, Any]) -> Datasource:
    module_name, class_name = SOURCES[name]
    cls = getattr(importlib.import_module(f"lockgate.firstboot.datasources.{module_name}"),
                  class_name)
    source: Datasource = cls(**options.get(name, {}), **_common(name, options))
    return source


def _common(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Pass sysfs_root/dev_root only to the sources that take them."""
    wanted = {"nocloud": ("dev_root",), "azure": ("sysfs_root", "dev_root"),
              "gce": ("sysfs_root",), "ec2": ("sysfs_root",)}[name]
    return {k: options[k] for k in wanted if options.get(k) is not None}


def get_source(spec: str, *, sysfs_root: Path | None = None, dev_root: Path | None = None,
               **per_source: dict[str, Any]) -> Datasource:
    """The source ``spec`` names. ``per_source`` passes constructor arguments by name,
    e.g. ``get_source("ec2", ec2={"base_url": "http://127.0.0.1:8080"})``.
    Raises ValueError for an unknown spec.
    """
    options: dict[str, Any] = {"sysfs_root": sysfs_root, "dev_root": dev_root, **per_source}
    if spec == "auto":
        return discover(sysfs_root=sysfs_root, dev_root=dev_root, **per_source)
    if spec.startswith("file:"):
        path = spec[len("file:"):]
        if not path:
            raise ValueError("file: needs a path, e.g. file:/root/user-data")
        from lockgate.firstboot.datasources.file import FileSource

        return FileSource(path)
    if spec not in SOURCES:
        raise ValueError(f"unknown source {spec!r}; use auto, {', '.join(DETECT_ORDER)} "
                         "or file:PATH")
    return _build(spec, options)


def discover(*, sysfs_root: Path | None = None, dev_root: Path | None = None,
             **per_source: dict[str, Any]) -> Datasource:
    """The first source whose ``detect()`` recognises this machine."""
    options: dict[str, Any] = {"sysfs_root": sysfs_root, "dev_root": dev_root, **per_source}
    for name in DETECT_ORDER:
        source = _build(name, options)
        if source.detect():
            return source
    raise DatasourceError("no cloud platform detected; use --source "
                          "(ec2, gce, azure, nocloud or file:PATH)")
