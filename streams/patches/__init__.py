"""Changes to what faust-streaming and aiokafka do, made through their extension points.

Each patch names the library version it was written for and refuses to run on another
(`written_for`), so an upgrade re-examines it instead of silently keeping or losing it.
"""

from __future__ import annotations

from importlib.metadata import version


class PatchVersionError(RuntimeError):
    """A patch meets a library version it was not written for."""


def written_for(distribution: str, expected: str) -> None:
    found = version(distribution)
    if found != expected:
        raise PatchVersionError(
            f"streams/patches was written for {distribution}=={expected}, found {found}: "
            "check each patch against the new version, then update the pin here"
        )
