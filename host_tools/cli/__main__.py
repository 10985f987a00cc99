"""``python -m host_tools.cli``: the same as the ``thingkit`` command."""

from host_tools.cli import main

raise SystemExit(main())
