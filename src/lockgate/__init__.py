"""lockgate: immutable A/B traffic-manager appliances for the clouds."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lockgate")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
