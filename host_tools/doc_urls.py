"""Documentation URLs, all from one configuration value (Appendix B: hw.doc_urls_configurable).

The value is ``base_url`` in ``docs/urls.toml``, read by :mod:`provisioning.doc_urls` (the
one reader, which provisioning uses for each device's ``config.json`` ``docs_url``); this
module builds page links from it and reports a bad file as a :class:`UserError`. The docs
build uses the same file for canonical links. Nothing else may spell a documentation URL:
``thingkit audit`` reports one written anywhere but ``docs/urls.toml``.

Usage::

    from host_tools import doc_urls

    doc_urls.base_url()                            # base_url of docs/urls.toml
    doc_urls.page_url("troubleshooting", "clock")  # <base>troubleshooting.html#clock
    doc_urls.board_url("m5stack-core2")            # <base>boards/m5stack-core2.html
"""

from __future__ import annotations

from pathlib import Path

from host_tools.errors import UserError
from provisioning import doc_urls as _source
from provisioning.doc_urls import URLS_FILE, DocUrls, DocUrlsError

__all__ = ["URLS_FILE", "DocUrls", "base_url", "board_url", "load", "page_url", "vendor_url"]


def _user_error(exc: DocUrlsError) -> UserError:
    return UserError(exc.what, exc.cause, exc.where)


def load(path: Path | None = None) -> DocUrls:
    """Read and check the URL file (default ``docs/urls.toml``).

    Raises:
        UserError: the file is missing, not TOML, or ``base_url`` is not an http(s) URL.
    """
    try:
        return _source.load(path)
    except DocUrlsError as exc:
        raise _user_error(exc) from exc


def _default() -> DocUrls:
    try:
        return _source.default()
    except DocUrlsError as exc:
        raise _user_error(exc) from exc


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
