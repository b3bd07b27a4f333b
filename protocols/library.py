"""The shipped protocol library: ``protocols/library/<name>.toml``, one protocol a file.

A library file's ``protocol.name`` must equal its file name, so a name always means
the same protocol — site exceptions rely on that.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from protocols.model import ProtocolError, ProtocolSpec, load_protocol_file, parse_protocol

_SUFFIX = ".toml"


def _library_dir() -> Traversable:
    return resources.files("protocols").joinpath("library")


def library_names() -> list[str]:
    """Names of the library protocols, sorted."""
    return sorted(
        entry.name.removesuffix(_SUFFIX)
        for entry in _library_dir().iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )


def load_library_protocol(name: str) -> ProtocolSpec:
    """The library protocol ``name``; an unknown name is a ``ProtocolError`` listing the known."""
    known = library_names()
    if name not in known:
        raise ProtocolError(
            [f"unknown library protocol {name!r} (known: {', '.join(known)})"]
        )
    source = f"library protocol {name!r}"
    text = _library_dir().joinpath(name + _SUFFIX).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError([f"file: not valid TOML ({exc})"], source=source) from None
    spec = parse_protocol(data, source=source)
    if spec.name != name:
        raise ProtocolError(
            [f"protocol.name: must equal the file name {name!r}, got {spec.name!r}"],
            source=source,
        )
    return spec


def resolve_protocol(name_or_path: str) -> ProtocolSpec:
    """A library name, or else a path to a protocol file.

    A bare word (no path separator, no ``.toml``) is a library name, even if a file of
    that name happens to exist in the working directory: the library wins, never a
    stray file.
    """
    is_bare_name = (
        "/" not in name_or_path
        and "\\" not in name_or_path
        and not name_or_path.endswith(_SUFFIX)
    )
    if is_bare_name:
        if name_or_path in library_names():
            return load_library_protocol(name_or_path)
        raise ProtocolError(
            [
                f"{name_or_path!r} is not a library protocol (known: "
                f"{', '.join(library_names())}); give a path with '/' or '.toml' for a file"
            ]
        )
    return load_protocol_file(Path(name_or_path))
