"""The one base class of provisioning's errors.

Every error provisioning raises for bad input or state (a bundle, the CA, a manifest, a
fleet spec, an image, the store, the documentation URLs) is a ``ProvisioningError``, so a
caller handles them once: the ``thingkit`` CLI prints ``thingkit: <message>`` and exits 1,
with no traceback (host_tools/cli.py). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Bad input or state found by provisioning; the message says what and where."""
