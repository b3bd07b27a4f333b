"""stimd: the control daemon for rTMS stimulators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stimd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
