"""The Appendix B rules and the text scanner that applies them to one file.

Each rule has a stable id (``appb.*``) and names the checklist item it protects
(docs/checklist.rst). A piece of text is reported under one rule only: the most
specific that matches (a shortened URL is ``appb.url_shortener``, not also
``appb.hardcoded_url``).

    findings = scan_text("firmware/tk/x.py", text, docs_host="thingkit.example")
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass

RULES: dict[str, tuple[str, str]] = {
    "appb.hardcoded_credential": (
        "hw.no_hardcoded_credentials",
        "a credential (password, token, secret, access key) written in a file",
    ),
    "appb.private_key": ("hw.no_hardcoded_credentials", "a private key in the repository"),
    "appb.hardcoded_endpoint": (
        "hw.no_hardcoded_urls",
        "an AWS endpoint, service host name or IP address written in a file",
    ),
    "appb.hardcoded_url": (
        "hw.no_hardcoded_urls",
        "a direct URL to a service or resource, or a documentation URL outside docs/urls.toml",
    ),
    "appb.url_shortener": ("hw.no_url_shorteners", "a shortened URL"),
    "appb.cognito": ("hw.no_cognito_config", "Cognito configuration (pool ids, pool keys, hosts)"),
    "appb.non_cert_credential": (
        "hw.cert_only_credentials",
        "a device config field for a credential other than the TLS certificate",
    ),
    "appb.cert_reuse": ("hw.unique_cert", "one certificate used by several devices"),
}


@dataclass(frozen=True)
class Finding:
    """One rule broken at one place.

    Attributes:
        path: the file, as shown to the user.
        line: 1-based line number (1 for a binary file).
        rule: a key of :data:`RULES`.
        message: what was found, with the offending text.
        text: the offending text alone (what allow-list ``match`` entries compare with).
    """

    path: str
    line: int
    rule: str
    message: str
    text: str = ""

    def line_str(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["checklist"] = RULES[self.rule][0]
        return d


# -- host names that are never real endpoints ------------------------------------------
# RFC 2606 / RFC 6761 reserved names and loopback: examples in docs and the local bench.
_RESERVED_SUFFIXES = (".example", ".invalid", ".test", ".localhost", ".local")
_RESERVED_NAMES = {"localhost", "example.com", "example.net", "example.org"}
# RFC 5737 documentation ranges, loopback, "any".
_DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


def reserved_host(host: str) -> bool:
    """True for a host name or address that cannot be a real service: reserved example
    domains, ``localhost``, loopback, 0.0.0.0 and the documentation address ranges."""
    h = host.lower().strip("[]").rstrip(".")
    if h in _RESERVED_NAMES or h.endswith(_RESERVED_SUFFIXES):
        return True
    if any(h.endswith("." + n) for n in _RESERVED_NAMES):
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified or any(ip in n for n in _DOC_NETS)


# -- patterns --------------------------------------------------------------------------
_REGION = r"(?:us|eu|ap|ca|sa|me|af|il|mx|cn|us-gov)-[a-z]+-\d"
_COGNITO = [
    (
        re.compile(_REGION + r":[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b", re.IGNORECASE),
        "Cognito identity pool id",
    ),
    (re.compile(r"\b" + _REGION + r"_[A-Za-z0-9]{9}\b"), "Cognito user pool id"),
    (
        re.compile(
            r"\b(?:IdentityPoolId|UserPoolId|UserPoolClientId|userPoolWebClientId"
            r"|aws_cognito_identity_pool_id|aws_user_pools_id|aws_user_pools_web_client_id"
            r"|identity_pool_id|user_pool_id|cognito_identity_pool)\b",
            re.IGNORECASE,
        ),
        "Cognito configuration key",
    ),
    (
        re.compile(
            r"\b[\w.-]*(?:cognito-identity|cognito-idp)\.[\w.-]*amazonaws\.com\b"
            r"|\b[\w.-]+\.amazoncognito\.com\b",
            re.IGNORECASE,
        ),
        "Cognito host",
    ),
]

_SHORTENERS = (
    "bit.ly",
    "bitly.com",
    "tinyurl.com",
    "goo.gl",
    "t.co",
    "ow.ly",
    "is.gd",
    "v.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
    "lnkd.in",
    "s.id",
    "bl.ink",
    "amzn.to",
    "amzn.eu",
    "a.co",
    "youtu.be",
    "t.ly",
    "tr.im",
    "x.co",
    "shorte.st",
    "adf.ly",
    "qr.ae",
    "db.tt",
    "1drv.ms",
    "aka.ms",
    "git.io",
)
_SHORT_HOSTS = "|".join(re.escape(s) for s in _SHORTENERS)
# A URL on a shortener: with a scheme, or a bare host followed by a path. A host name
# alone (as in the table above) is no link.
_SHORTENER = re.compile(
    rf"\b[a-z][a-z0-9+.-]*://(?:www\.)?(?:{_SHORT_HOSTS})(?![\w.-])[^\s'\"<>`)\]]*"
    rf"|(?<![\w.-])(?:www\.)?(?:{_SHORT_HOSTS})/[^\s'\"<>`)\]]+",
    re.IGNORECASE,
)

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>`)\]\\]+", re.IGNORECASE)
_AWS_HOST = re.compile(r"(?<![\w-])(?:[a-z0-9-]+\.)+amazonaws\.com(?:\.cn)?\b", re.IGNORECASE)
_IOT_HOST = re.compile(r"\.iot\.[a-z0-9-]+\.amazonaws\.com", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])(?<!==)(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_ENDPOINT_KEY = re.compile(
    r"""\b(?:endpoint|host|hostname|broker|mqtt_host|iot_endpoint|server)\b["']?\s*[:=]\s*"""
    r"""[bru]{0,2}["']((?:[a-z0-9-]+\.)+[a-z]{2,})["']""",
    re.IGNORECASE,
)

_CRED_WORDS = (
    r"password|passwd|passphrase|pwd|secret|secret_key|secret_access_key|access_key"
    r"|access_key_id|api_key|apikey|auth_token|access_token|session_token|token|bearer"
    r"|psk|private_key|client_secret"
)
_CREDENTIAL = re.compile(
    rf"""["']?\b(?:[\w-]*[_-])?(?:{_CRED_WORDS})\b["']?\s*[:=]\s*[bru]{{0,2}}["']"""
    r"""([^"'\s]{3,})["']""",
    re.IGNORECASE,
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
_JWT = re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}")
_URL_USERINFO = re.compile(
    r"\b[a-z][a-z0-9+.-]*://([^\s/@'\"<>:]+):([^\s/@'\"<>]+)@", re.IGNORECASE
)
# Values that stand for a credential rather than being one.
_PLACEHOLDER = re.compile(
    r"^(?:<.*>|\$\{?.*|\{.*\}|%.*|\*+|x{3,}|\.{3}|redacted|none|null)$", re.IGNORECASE
)

# A PEM private key: the BEGIN line then base64 (also inside a string with \n escapes).
PEM_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:\s|\\n)*"
    r"(?:[A-Za-z-]+: [^\n\\]*(?:\s|\\n)+)*[A-Za-z0-9+/=]{16,}"
)


def _url_host(url: str) -> str:
    """The host part of ``scheme://[user@]host[:port]/...``; '' if it is a template."""
    netloc = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]
    netloc = netloc.rsplit("@", 1)[-1]
    if netloc.startswith("["):
        host = netloc[1:].split("]", 1)[0]
    else:
        host = netloc.split(":", 1)[0]
    if not host or any(c in host for c in "{}%$<>"):
        return ""
    return host.lower()


class _Line:
    """The findings of one line, each character span claimed by one rule only."""

    def __init__(self, path: str, lineno: int) -> None:
        self.path, self.lineno = path, lineno
        self.spans: list[tuple[int, int]] = []
        self.found: list[Finding] = []

    def add(self, m: re.Match, rule: str, message: str, group: int = 0) -> None:
        s, e = m.span(group)
        if any(s < e2 and s2 < e for s2, e2 in self.spans):
            return
        self.spans.append((s, e))
        text = m.group(group)
        self.found.append(Finding(self.path, self.lineno, rule, f"{message}: {text}", text))


def scan_line(
    path: str, lineno: int, line: str, docs_host: str = "", strict: bool = False
) -> list[Finding]:
    """Apply the text rules to one line, most specific rule first.

    ``strict`` (code bound for a device): reserved example hosts and loopback addresses
    are findings too; a device image has no reason to name any host at all.
    """
    out = _Line(path, lineno)

    def excused(host: str) -> bool:
        return not strict and reserved_host(host)

    for rx, what in _COGNITO:
        for m in rx.finditer(line):
            out.add(m, "appb.cognito", what)
    for m in _SHORTENER.finditer(line):
        out.add(m, "appb.url_shortener", "shortened URL on a domain the project does not control")
    for m in _URL_USERINFO.finditer(line):
        if not _PLACEHOLDER.match(m.group(2)):
            out.add(m, "appb.hardcoded_credential", "user name and password in a URL")
    for m in _AWS_HOST.finditer(line):
        kind = "AWS IoT endpoint" if _IOT_HOST.search(m.group(0)) else "AWS service host"
        out.add(m, "appb.hardcoded_endpoint", f"{kind} written in a file (use config)")
    for m in _IPV4.finditer(line):
        try:
            ipaddress.ip_address(m.group(0))
        except ValueError:
            continue  # 999.1.2.3 is not an address
        if not excused(m.group(0)):
            out.add(m, "appb.hardcoded_endpoint", "IP address written in a file (use config)")
    for m in _ENDPOINT_KEY.finditer(line):
        if not excused(m.group(1)):
            out.add(m, "appb.hardcoded_endpoint", "endpoint host written in a file", 1)
    for m in _AWS_KEY_ID.finditer(line):
        out.add(m, "appb.hardcoded_credential", "AWS access key id")
    for m in _JWT.finditer(line):
        out.add(m, "appb.hardcoded_credential", "bearer token (JWT)")
    for m in _CREDENTIAL.finditer(line):
        if not _PLACEHOLDER.match(m.group(1)):
            out.add(m, "appb.hardcoded_credential", "credential value written in a file")
    for m in _URL.finditer(line):
        url = m.group(0).rstrip(".,;:")
        host = _url_host(url)
        if not host:
            continue
        if docs_host and host == docs_host:
            out.add(
                m,
                "appb.hardcoded_url",
                "documentation URL written here; take it from docs/urls.toml",
            )
        elif not excused(host):
            out.add(m, "appb.hardcoded_url", "direct URL written in a file (use config)")
    return out.found


def scan_text(path: str, text: str, docs_host: str = "", strict: bool = False) -> list[Finding]:
    """All text-rule findings of one file's content (private keys included); ``strict``
    as for :func:`scan_line`."""
    found: list[Finding] = []
    for n, line in enumerate(text.splitlines(), 1):
        found += scan_line(path, n, line, docs_host, strict)
    found += private_keys(path, text)
    return found


def private_keys(path: str, text: str) -> list[Finding]:
    """PEM private keys in a file's text, at the line of their BEGIN marker."""
    out = []
    for m in PEM_KEY.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        kind = (m.group(1) or "").strip() or "PKCS#8"
        out.append(
            Finding(path, line, "appb.private_key", f"PEM private key ({kind})", "PRIVATE KEY")
        )
    return out
