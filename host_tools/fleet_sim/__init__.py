"""The fleet simulator: N virtual kits (the real firmware, distinct identities from the
provisioning toolkit) against the bench, and what the broker sees of them.

- :mod:`host_tools.fleet_sim.fleet`: ``Fleet.up/status/down`` (``thingkit fleet``);
- :mod:`host_tools.fleet_sim.observer`: the background process that counts online kits,
  message rates and telemetry loss;
- :mod:`host_tools.fleet_sim.measure`: connects per second from the broker log, memory
  and CPU of kit processes from /proc (used by ``benchmarks/``).
"""
