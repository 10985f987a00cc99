"""The checklist items a HIL test can show: a view on the one catalogue,
:mod:`host_tools.checklist.catalog`, which ``thingkit validate`` uses too.

Ids are those of shared/CHECKLISTS.md, never renamed or reused. ``app2.<c>`` is one item
per component of the board under test; ``app2.*`` in a marker stands for all of them.
"""

from __future__ import annotations

from host_tools.checklist.catalog import (  # noqa: F401  (the HIL plugin's names)
    APP1,
    APP2,
    APP2_ALL,
    APPENDIX_B,
    LENS,
    NOT_HIL,
    SECTIONS,
    Item,
    catalogue,
    is_known,
    item,
)
