"""The layout shows the design: ``host_tools`` may import ``provisioning``, never the reverse.

Every module under ``provisioning/`` is parsed with :mod:`ast` and each import in it
(module level, inside functions, relative, or by name through ``importlib``) is resolved
to an absolute module name; none may be ``host_tools`` or below. A second check imports
every provisioning module in a fresh interpreter and looks at ``sys.modules``.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

from host_tools.paths import REPO

PROVISIONING = REPO / "provisioning"
FORBIDDEN = "host_tools"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module an ``from ... import`` names (relative ones against package)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    if node.level - 1 > len(base):
        return node.module or ""
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def forbidden_imports(source: str, package: str, filename: str = "<src>") -> list[str]:
    """``line: module`` for every import of host_tools in source (a module of package)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node, package)
            names = [mod] + [f"{mod}.{a.name}" if mod else a.name for a in node.names]
        elif isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names = [arg.value]
        found += [f"{filename}:{node.lineno}: {n}" for n in names if _forbidden(n)]
    return found


def _provisioning_files() -> list[Path]:
    return sorted(PROVISIONING.rglob("*.py"))


def test_the_checker_finds_every_kind_of_import() -> None:
    pkg = "provisioning"
    assert forbidden_imports("import json\nfrom provisioning.ca import KeyPair\n", pkg) == []
    assert forbidden_imports("import host_tools_extra\n", pkg) == []
    cases = [
        "import host_tools\n",
        "import host_tools.bench.acl as acl\n",
        "from host_tools.errors import UserError\n",
        "from host_tools import doc_urls\n",
        "def f():\n    from host_tools.boards.registry import load_board\n",
        "class C:\n    def m(self):\n        import host_tools.paths\n",
        "from .. import host_tools\n",
        "import importlib\nm = importlib.import_module('host_tools.paths')\n",
        "m = __import__('host_tools')\n",
    ]
    for src in cases:
        assert forbidden_imports(src, pkg), src
    # A relative import inside a subpackage that climbs out of provisioning/.
    assert forbidden_imports("from ...host_tools import paths\n", "provisioning.aws")


def test_provisioning_never_imports_host_tools() -> None:
    files = _provisioning_files()
    assert len(files) >= 10  # the package is really there
    bad = []
    for f in files:
        src = f.read_text(encoding="utf-8")
        bad += forbidden_imports(src, _package(f), str(f.relative_to(REPO)))
    assert bad == [], "provisioning/ imports host_tools:\n" + "\n".join(bad)


def test_importing_provisioning_loads_no_host_tools() -> None:
    mods = [_module_name(f) for f in _provisioning_files()]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m == {FORBIDDEN!r} "
        f"or m.startswith({FORBIDDEN + '.'!r}))\n"
        "print(len(bad)); print(*bad, sep='\\n')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "0", out.stdout


def test_bench_registration_moved_to_the_bench() -> None:
    assert not (PROVISIONING / "bench_registry.py").exists()
    assert importlib.util.find_spec("provisioning.bench_registry") is None
    assert importlib.util.find_spec("host_tools.bench.registry") is not None


def test_docs_urls_file_has_one_reader() -> None:
    """provisioning.doc_urls reads docs/urls.toml; host_tools.doc_urls builds links on it."""
    from host_tools import doc_urls
    from provisioning import doc_urls as source

    src = (REPO / "host_tools" / "doc_urls.py").read_text(encoding="utf-8")
    assert "tomllib" not in src and "read_text" not in src
    assert doc_urls.URLS_FILE == source.URLS_FILE == REPO / "docs" / "urls.toml"
    assert doc_urls.base_url() == source.base_url()


def test_readme_names_every_folder_of_host_tools() -> None:
    """README's layout table has a row for each package folder of ``host_tools/``."""
    readme = (REPO / "README.md").read_text()
    folders = sorted(p.parent.name for p in (REPO / "host_tools").glob("*/__init__.py"))
    missing = [f for f in folders if f"`{f}/`" not in readme]
    assert missing == []
