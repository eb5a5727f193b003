"""lockgate: immutable A/B traffic-manager appliances for the clouds."""

from __future__ import annotations

from pathlib import Path


def _version() -> str:
    """This installation's version, without importing importlib.metadata where possible.

    ``importlib.metadata`` (email, zipfile, csv, ...) took ~3 s of every lockgate
    process's start under TCG, on the appliance's boot path (issue 12). An installed
    wheel has ``lockgate-<version>.dist-info`` beside the package, which names the
    version; anything else (an editable install, a source tree) asks importlib.metadata.
    """
    found = sorted(Path(__file__).resolve().parent.parent.glob("lockgate-*.dist-info"))
    if len(found) == 1:
        return found[0].name.removesuffix(".dist-info").removeprefix("lockgate-")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lockgate")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+unknown"


__version__ = _version()
