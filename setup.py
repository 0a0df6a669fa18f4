"""Build of jupyterhub-dataaccess: setuptools, plus the JupyterLab extension built from labextension/.

`build_py` and `sdist` first make sure the prebuilt labextension in
`jupyterhub_dataaccess/labextension/` matches the TypeScript sources: when it does (an sdist, or a
checkout built before), Node is not needed; otherwise they run `npm ci` (or `npm install` without a
lock file), `tsc` and JupyterLab's builder (`jupyter-builder build labextension`, which
`jupyter labextension build` forwards to since JupyterLab 4.6). The wheel then carries:

  share/jupyter/labextensions/jupyterhub-dataaccess/   the built extension and install.json
  etc/jupyter/jupyter_server_config.d/jupyterhub_dataaccess.json   enables the server extension

Metadata lives in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
LABEXTENSION_SRC = HERE / "labextension"
LABEXTENSION_OUT = HERE / "jupyterhub_dataaccess" / "labextension"
STAMP = LABEXTENSION_OUT / "build.sha256"
EXTENSION_NAME = "jupyterhub-dataaccess"
SHARE_DIR = f"share/jupyter/labextensions/{EXTENSION_NAME}"
SERVER_CONFIG = "jupyter-config/jupyter_server_config.d/jupyterhub_dataaccess.json"
INSTALL_JSON = "install.json"

# What the built extension depends on: a change to any of these needs a new build. The API's
# TypeScript types are generated from the OpenAPI spec (src/openapi.ts, not a source itself).
SOURCE_FILES = ("package.json", "package-lock.json", "tsconfig.json",
                "../jupyterhub_dataaccess/service/openapi.yaml")
SOURCE_DIRS = ("src", "style", "schema")
GENERATED = ("src/openapi.ts",)


def _sources_hash() -> str | None:
    """A hash of the labextension sources, or None when they are not here (e.g. a wheel build
    from an sdist that carries only the built extension)."""
    if not (LABEXTENSION_SRC / "package.json").is_file():
        return None
    digest = hashlib.sha256()
    paths = [LABEXTENSION_SRC / name for name in SOURCE_FILES]
    for folder in SOURCE_DIRS:
        paths.extend(sorted((LABEXTENSION_SRC / folder).rglob("*")))
    for path in paths:
        name = os.path.relpath(path, LABEXTENSION_SRC).replace(os.sep, "/")
        if path.is_file() and name not in GENERATED:
            digest.update(name.encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _built() -> bool:
    return (LABEXTENSION_OUT / "package.json").is_file() and (LABEXTENSION_OUT / "static").is_dir()


def _up_to_date() -> bool:
    if not _built():
        return False
    current = _sources_hash()
    if current is None:
        return True  # nothing to rebuild from: use the prebuilt extension as shipped
    return STAMP.is_file() and STAMP.read_text().strip() == current


def _run(command: list[str], cwd: Path) -> None:
    print("jupyterhub-dataaccess: running", " ".join(command), flush=True)
    subprocess.check_call(command, cwd=str(cwd))


def build_labextension() -> None:
    """Build the labextension into jupyterhub_dataaccess/labextension unless it is up to date."""
    if os.environ.get("DATAACCESS_SKIP_LABEXTENSION_BUILD") and _built():
        return
    if _up_to_date():
        print("jupyterhub-dataaccess: the prebuilt labextension is up to date", flush=True)
        return
    if _sources_hash() is None:
        raise RuntimeError("No prebuilt labextension and no labextension/ sources to build it from")
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "Building the JupyterLab extension needs Node.js and npm (Node >= 20.19). "
            "Install them, or install jupyterhub-dataaccess from a wheel or sdist."
        )
    lock = LABEXTENSION_SRC / "package-lock.json"
    _run([npm, "ci" if lock.is_file() else "install", "--no-audit", "--no-fund"], LABEXTENSION_SRC)
    _run([npm, "run", "build:lib"], LABEXTENSION_SRC)
    shutil.rmtree(LABEXTENSION_OUT, ignore_errors=True)
    _run(
        [sys.executable, "-m", "jupyter_builder.main", "build", str(LABEXTENSION_SRC)],
        HERE,
    )
    stamp = _sources_hash()
    assert stamp is not None
    STAMP.write_text(stamp + "\n")


def _data_files() -> list[tuple[str, list[str]]]:
    """The built extension under share/, install.json beside it, and the server config file."""
    files: list[tuple[str, list[str]]] = [
        ("etc/jupyter/jupyter_server_config.d", [SERVER_CONFIG]),
        (SHARE_DIR, [INSTALL_JSON]),
    ]
    if not LABEXTENSION_OUT.is_dir():
        return files
    by_dir: dict[str, list[str]] = {}
    for path in sorted(LABEXTENSION_OUT.rglob("*")):
        if not path.is_file() or path == STAMP:
            continue
        relative = path.relative_to(LABEXTENSION_OUT).parent.as_posix()
        target = SHARE_DIR if relative == "." else f"{SHARE_DIR}/{relative}"
        by_dir.setdefault(target, []).append(path.relative_to(HERE).as_posix())
    files.extend(by_dir.items())
    return files


DATA_FILES = _data_files()


def _refresh_data_files() -> None:
    """data_files are read after build_py runs: update the same list in place."""
    DATA_FILES[:] = _data_files()


class BuildPyWithLabextension(build_py):
    """build_py that builds the labextension first and keeps its files out of the package dir
    (they are installed once, under share/jupyter/labextensions)."""

    def run(self) -> None:
        build_labextension()
        _refresh_data_files()
        super().run()

    def find_data_files(self, package: str, src_dir: str) -> list[str]:
        files = super().find_data_files(package, src_dir)
        built = str(LABEXTENSION_OUT.relative_to(HERE)) + os.sep
        return [name for name in files if not os.path.normpath(name).startswith(built)]


class SdistWithLabextension(sdist):
    """sdist that ships the built labextension, so installing from it needs no Node."""

    def run(self) -> None:
        build_labextension()
        _refresh_data_files()
        super().run()


setup(
    data_files=DATA_FILES,
    cmdclass={"build_py": BuildPyWithLabextension, "sdist": SdistWithLabextension},
)
