"""The Appendix B audit: hard-coded credentials, keys, endpoints and URLs, URL shorteners,
Cognito configuration, non-certificate credentials and certificate reuse.

    from host_tools.audit import audit
    report = audit()              # the repository's default paths
    report.ok, report.findings
"""

from host_tools.audit.rules import RULES, Finding
from host_tools.audit.scan import Report, audit

__all__ = ["RULES", "Finding", "Report", "audit"]
