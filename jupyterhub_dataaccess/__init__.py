"""jupyterhub-dataaccess: governed, rapid access to real data from JupyterHub.

In a notebook::

    import jupyterhub_dataaccess as da
    da.datasets()                    # what I can see, with my access status
    df = da.load("penguins")         # a pandas DataFrame, masks and row filters applied
    da.request("flights", justification="delay model", days=30)
    da.duckdb("penguins").aggregate("species, count(*)")   # SQL over a granted dataset

Importing this package is light: the hub, service and server parts load only when used.
"""

__version__ = "0.1.0"

from ._jupyter import (  # noqa: E402
    _jupyter_labextension_paths,
    _jupyter_server_extension_points,
    _load_jupyter_server_extension,
)
from .client import (  # noqa: E402
    AccessDenied,
    DataAccessError,
    datasets,
    duckdb,
    grants,
    info,
    load,
    open,
    provenance,
    request,
    requests,
    scan,
    sql,
    without_token,
)

__all__ = [
    "AccessDenied", "DataAccessError", "__version__", "datasets", "duckdb", "grants", "info", "load",
    "open", "provenance", "request", "requests", "scan", "sql", "without_token",
    "_jupyter_labextension_paths",
    "_jupyter_server_extension_points", "_load_jupyter_server_extension",
]
