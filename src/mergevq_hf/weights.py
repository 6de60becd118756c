"""Where third-party weight files come from (the FID Inception network, the LPIPS VGG16): one rule for all.

An explicit ``path``, else the environment variable, else the fallbacks in order (a cache file, a file inside an
installed package). Nothing is downloaded and no installer is run: when no file is found the caller raises
``FileNotFoundError`` with the command that installs the package holding the weights.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def installed_package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed ``package`` folder, found without importing the package (its imports may
    need dependencies we do not install), or ``None`` when the package or the file is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [os.path.dirname(spec.origin)]
    for folder in folders:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


def find_weights_file(
    path: str | os.PathLike | None,
    env_var: str,
    fallbacks: Iterable[Callable[[], Path | None]] = (),
    what: str = "weights",
) -> Path | None:
    """``path``, else ``$env_var``, else the first fallback that returns a file; ``None`` when none does.

    An explicit ``path`` or environment value that names no file raises ``FileNotFoundError`` (a typo must not
    fall through to another file silently)."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
        return path
    env = os.environ.get(env_var)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"${env_var}={env!r} does not name a file ({what})")
        return Path(env)
    for fallback in fallbacks:
        found = fallback()
        if found is not None and Path(found).is_file():
            return Path(found)
    return None


__all__ = ["find_weights_file", "installed_package_file"]
