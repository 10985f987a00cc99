"""``python -m host_tools.view``: :func:`host_tools.view.cli.main`."""

import sys

from host_tools.view.cli import main

sys.exit(main())
