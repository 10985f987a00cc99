"""A long-duration test on the bench, after AWS IoT Device Advisor's Long Duration Test:
one or more virtual kits run through steady operation, a broker restart, a disconnect
longer than the backoff cap, an intermittent link, withheld broker responses and NTP
trouble at boot; the summary counts every reading the kits took and says, per phase,
whether it passed (docs/ldt.rst).

    from host_tools.ldt import LdtOptions, run_ldt
    doc = run_ldt(LdtOptions(duration_s=150, out=Path("ldt")))
"""

from host_tools.ldt.runner import LdtOptions, run_ldt

__all__ = ["LdtOptions", "run_ldt"]
