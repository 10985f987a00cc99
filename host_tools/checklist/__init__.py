"""The checklist thingkit shows: one catalogue of items (:mod:`.catalog`), used by
``thingkit validate`` and by the HIL suite's report alike."""
