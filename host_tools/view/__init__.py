"""A live view of the bench and its fleet in a browser (``thingkit view``).

:mod:`~host_tools.view.model` holds what is known about each thing, fed by
:mod:`~host_tools.view.source` (the bench broker seen as its operator, the broker log,
the jobs API) and served by :mod:`~host_tools.view.server` (aiohttp, server-sent events)
to the page in ``static/``. See docs/view.rst.
"""
