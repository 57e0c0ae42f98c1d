"""The libraries embedtrain runs on: installed versions, the tested set, and combinations known to be broken.

``embedtrain env`` prints :func:`environment`. Features whose dependencies are known to clash at some versions
call :func:`require_compatible` when they are imported, so a broken combination is one line naming both
versions and the fix, not a stack trace from deep inside a library.

:data:`TESTED_VERSIONS` is the combination CI tested (``constraints.txt`` pins it for installs; a test keeps
the two equal).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata

from embedtrain.errors import EmbedtrainError

#: The core libraries, in the order ``embedtrain env`` prints them.
CORE_LIBRARIES: tuple[str, ...] = ("torch", "transformers", "sentence-transformers", "datasets", "accelerate",
                                   "peft", "mteb")

#: The versions CI tested together (the same as constraints.txt).
TESTED_VERSIONS: dict[str, str] = {
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "sentence-transformers": "6.2.0",
    "datasets": "5.2.0",
    "accelerate": "1.15.0",
    "peft": "0.21.2",
    "mteb": "2.26.24",
}

INSTALL_FIX = 'pip install -c constraints.txt -e ".[dev,llm]" (the tested set; see README)'


class DependencyError(EmbedtrainError):
    """Installed library versions that are known not to work together."""


@dataclass(frozen=True)
class KnownClash:
    """``package`` at ``package_from`` or newer needs ``needs`` at ``needs_from`` or newer."""

    package: str
    package_from: str
    needs: str
    needs_from: str
    fix: str
    #: The embedtrain features this breaks (for the message).
    features: str


#: Combinations that are known not to work, each with its fix.
KNOWN_CLASHES: tuple[KnownClash, ...] = (
    KnownClash("transformers", "5.24.0", "peft", "0.22.0", fix="pip install 'transformers<5.24'",
               features="LoRA (task adapters, export-task, LoRA soups)"),
)


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (None when it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def _parse(version: str):
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version)
    except InvalidVersion:
        return None


def _at_least(version: str | None, floor: str) -> bool:
    parsed = _parse(version) if version else None
    return parsed is not None and parsed.release >= _parse(floor).release


def clashes(packages: tuple[str, ...] | None = None) -> list[str]:
    """One message per known clash among the installed versions (only clashes involving ``packages``)."""
    found = []
    for clash in KNOWN_CLASHES:
        if packages is not None and clash.package not in packages and clash.needs not in packages:
            continue
        have, needs_have = installed_version(clash.package), installed_version(clash.needs)
        if needs_have is None or not _at_least(have, clash.package_from) or _at_least(needs_have, clash.needs_from):
            continue
        found.append(f"{clash.package} {have} needs {clash.needs} >= {clash.needs_from}, but {clash.needs} "
                     f"{needs_have} is installed, so {clash.features} cannot work; fix: {clash.fix} "
                     f"or {INSTALL_FIX}")
    return found


def require_compatible(*packages: str) -> None:
    """Raise :class:`DependencyError` (one line) when a known clash involves ``packages``."""
    found = clashes(tuple(packages))
    if found:
        raise DependencyError(found[0])


@dataclass
class Environment:
    """What ``embedtrain env`` reports."""

    embedtrain: str
    python: str
    versions: dict[str, str | None]
    tested: dict[str, str]
    clashes: list[str]

    @property
    def matches_tested(self) -> bool:
        return all(_same_release(self.versions.get(k), v) for k, v in self.tested.items())


def _same_release(installed: str | None, tested: str) -> bool:
    parsed = _parse(installed) if installed else None
    return parsed is not None and parsed.release == _parse(tested).release


def environment() -> Environment:
    import platform

    from embedtrain import __version__

    return Environment(__version__, platform.python_version(),
                       {name: installed_version(name) for name in CORE_LIBRARIES}, dict(TESTED_VERSIONS), clashes())
