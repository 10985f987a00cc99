"""Over-the-air updates: signed bundles, rollout through jobs (``thingkit ota``)."""
