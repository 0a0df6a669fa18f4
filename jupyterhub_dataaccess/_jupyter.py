"""Jupyter entry points: the server extension and the prebuilt JupyterLab extension.

Kept import-light on purpose: kernels import `jupyterhub_dataaccess`, so nothing from
tornado or jupyter_server is imported here until a Jupyter server asks for it.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Tell jupyter_server which module holds the extension (this package)."""
    return [{"module": "jupyterhub_dataaccess"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the `/dataaccess/api/v1/...` forwarding handlers to a Jupyter server."""
    from .server import load_jupyter_server_extension

    load_jupyter_server_extension(serverapp)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives inside the package (for development)."""
    return [{"src": "labextension", "dest": "jupyterhub-dataaccess"}]
