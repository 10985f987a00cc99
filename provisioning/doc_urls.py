"""Documentation URLs, all from one configuration value (Appendix B: hw.doc_urls_configurable).

The value is ``base_url`` in ``docs/urls.toml``. Provisioning writes it into each device's
``config.json`` (``docs_url``), the docs build uses it for canonical links, and host tools
build page links from it (:mod:`host_tools.doc_urls`, which reads the file through this
module). Nothing else may spell a documentation URL: ``thingkit audit`` reports one
written anywhere but ``docs/urls.toml``.

This module is the one reader of that file. It lives in :mod:`provisioning` because
provisioning needs the value and must not import :mod:`host_tools` (host tools may
import provisioning, never the reverse).

Usage::

    from provisioning import doc_urls

    doc_urls.base_url()           # base_url of docs/urls.toml, ending in "/"
    doc_urls.load(path).links     # another file, checked (DocUrlsError if it is not valid)
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.errors import ProvisioningError

URLS_FILE = Path(__file__).resolve().parent.parent / "docs" / "urls.toml"


class DocUrlsError(ProvisioningError, ValueError):
    """The URL file is missing, not TOML, or holds a value that is not valid.

    Args:
        what: what failed.
        cause: the likely cause.
        where: where to look (the file).
    """

    def __init__(self, what: str, cause: str = "", where: str = "") -> None:
        self.what, self.cause, self.where = what, cause, where
        super().__init__("; ".join(p for p in (what, cause) if p))


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
        DocUrlsError: the file is missing, not TOML, or ``base_url`` is not an http(s) URL,
            or a ``links`` pattern does not hold ``%s`` exactly once.
    """
    path = Path(path) if path else URLS_FILE
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DocUrlsError(f"cannot read {path}", str(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DocUrlsError(f"{path} is not valid TOML", str(exc)) from exc
    base = doc.get("base_url")
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        raise DocUrlsError(f"{path}: base_url must be an http(s) URL", where=str(path))
    links = {str(k): str(v) for k, v in (doc.get("links") or {}).items()}
    for name, pattern in links.items():
        if pattern.count("%s") != 1:
            raise DocUrlsError(f"{path}: links.{name} must contain %s once", where=str(path))
    boards = {str(k): str(v) for k, v in (doc.get("boards") or {}).items()}
    return DocUrls(base.rstrip("/") + "/", links, boards, path)


@functools.cache
def default() -> DocUrls:
    """``docs/urls.toml`` as loaded once per process (see :func:`load` for the errors)."""
    return load()


def base_url() -> str:
    """The documentation base URL: what provisioning writes as config.json ``docs_url``."""
    return default().base_url
