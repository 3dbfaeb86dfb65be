"""Intersphinx that works offline: small local inventories as the fallback.

Each ``<name>.txt`` in the source folder lists, one per line,

    <object name> <domain:role> <URI relative to the project's docs>

(``$`` anywhere in the URI stands for the object's name).
:func:`mapping` compiles every list to a Sphinx ``objects.inv`` (version 2)
and returns an ``intersphinx_mapping`` whose locations try that local file
first; online, the project's published inventory comes first instead.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

_HEADER = (
    "# Sphinx inventory version 2\n"
    "# Project: {project}\n"
    "# Version: \n"
    "# The remainder of this file is compressed using zlib.\n"
)


def compile_inventory(text: str, project: str) -> bytes:
    """Return the ``objects.inv`` bytes for the lines of one ``.txt`` list."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[1]:
            raise ValueError(
                f"{project} inventory, line {number}: expected "
                f"'<name> <domain:role> <uri>', got {raw!r}"
            )
        name, role, uri = fields
        # objects.inv only expands a trailing "$"; expand it anywhere here.
        entries.append(f"{name} {role} 1 {uri.replace('$', name)} -\n")
    body = zlib.compress("".join(entries).encode("utf-8"), 9)
    return _HEADER.format(project=project).encode("utf-8") + body


def mapping(projects, *, source: Path, build: Path, online: bool):
    """``intersphinx_mapping`` with local inventories compiled into `build`.

    Parameters
    ----------
    projects : dict
        ``name -> (target URI, published inventory URI or None)``.
    source : Path
        Folder of the ``<name>.txt`` lists.
    build : Path
        Folder for the compiled ``<name>.inv`` files.
    online : bool
        Try the published inventory before the local one.
    """
    build.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, (target, published) in projects.items():
        listing = source / f"{name}.txt"
        local = build / f"{name}.inv"
        data = compile_inventory(listing.read_text(encoding="utf-8"), name)
        # Write atomically: concurrent builds may share the folder.
        partial = local.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, local)
        remote = published  # None means <target>/objects.inv
        locations = (remote, str(local)) if online else (str(local),)
        result[name] = (target, locations)
    return result
