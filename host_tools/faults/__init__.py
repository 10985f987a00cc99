"""Fault injection between kits and the bench: a TCP proxy that cuts, stalls, delays and
drops (see :mod:`host_tools.faults.proxy`)."""

from host_tools.faults.proxy import Counters, FaultProxy

__all__ = ["Counters", "FaultProxy"]
