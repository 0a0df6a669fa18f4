"""The Jupyter server extension: forwards the panel's `/dataaccess/api/v1/...` calls to the service.

It runs in each user's server (jupyterhub-singleuser, or plain `jupyter lab`) and decides nothing:
it adds the server's own token and passes the request on to the dataaccess service.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from .handlers import API_PREFIX, ForwardingHandler


def load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the forwarding handler under the server's base_url."""
    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    route = url_path_join(base_url, API_PREFIX, "(.*)")
    web_app.add_handlers(".*$", [(route, ForwardingHandler)])
    serverapp.log.info("jupyterhub_dataaccess: forwarding %s to the data access service", route)


__all__ = ["load_jupyter_server_extension", "ForwardingHandler"]
