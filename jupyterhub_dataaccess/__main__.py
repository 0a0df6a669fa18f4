"""`python -m jupyterhub_dataaccess ...` is the `jupyterhub-dataaccess` command."""

import sys

from .cli import main

sys.exit(main())
