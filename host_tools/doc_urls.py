"""Documentation URLs, all from one configuration value (Appendix B: hw.doc_urls_configurable).

The value is ``base_url`` in ``docs/urls.toml``. Provisioning writes it into each device's
``config.json`` (``docs_url``), the docs build uses it for canonical links, and host tools
build page links from it. Nothing else may spell a documentation URL: ``thingkit audit``
reports one written anywhere but ``docs/urls.toml``.

Usage::

    from host_tools import doc_urls

    doc_urls.base_url()                            # base_url of docs/urls.toml
    doc_urls.page_url("troubleshooting", "clock")  # <base>troubleshooting.html#clock
    doc_urls.board_url("m5stack-core2")            # <base>boards/m5stack-core2.html
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import REPO

URLS_FILE = REPO / "docs" / "urls.toml"


@dataclass(frozen=True)
class DocUrls:
    """The parsed ``docs/urls.toml``.

    Attributes:
        base_url: where the multi-page HTML is published, ending in ``/``.
        links: link name -> URL pattern with one ``%s`` (Sphinx extlinks).
        boards: a board file's ``url_key`` -> the vendor's hardware documentation.
        path: the file it was read from.
    """

    base_url: str
    links: dict[str, str] = field(default_factory=dict)
    boards: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def load(path: Path | None = None) -> DocUrls:
    """Read and check the URL file (default ``docs/urls.toml``).

    Raises:
        UserError: the file is missing, not TOML, or ``base_url`` is not an http(s) URL.
    """
    path = Path(path) if path else URLS_FILE
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}", str(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML", str(exc)) from exc
    base = doc.get("base_url")
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        raise UserError(f"{path}: base_url must be an http(s) URL", where=str(path))
    links = {str(k): str(v) for k, v in (doc.get("links") or {}).items()}
    for name, pattern in links.items():
        if pattern.count("%s") != 1:
            raise UserError(f"{path}: links.{name} must contain %s once", where=str(path))
    boards = {str(k): str(v) for k, v in (doc.get("boards") or {}).items()}
    return DocUrls(base.rstrip("/") + "/", links, boards, path)


@functools.cache
def _default() -> DocUrls:
    return load()


def base_url() -> str:
    """The documentation base URL: what provisioning writes as config.json ``docs_url``."""
    return _default().base_url


def page_url(page: str, anchor: str = "") -> str:
    """The URL of one page of the multi-page HTML (``page`` without ``.html``)."""
    url = f"{base_url()}{page.strip('/')}.html"
    return f"{url}#{anchor}" if anchor else url


def board_url(board_id: str) -> str:
    """The URL of a board's page in the documentation."""
    return page_url(f"boards/{board_id}")


def vendor_url(url_key: str) -> str | None:
    """The vendor's hardware documentation for a board's ``url_key``, if one is listed."""
    return _default().boards.get(url_key)
