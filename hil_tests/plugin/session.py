"""The plugin's state for one pytest run: options, the target, outcomes, artifacts."""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hil_tests.plugin.artifacts import Artifacts
from hil_tests.plugin.report import Outcome
from hil_tests.targets import TargetOptions, make_target
from hil_tests.targets.base import NotSupportedError, Target
from host_tools.errors import UserError
from host_tools.paths import FIRMWARE, REPO

HIL_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS = pytest.StashKey[Artifacts]()
_SESSION = pytest.StashKey["HilSession"]()


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup("thingkit HIL")
    g.addoption(
        "--target",
        default=None,
        choices=["sim", "serial"],
        help="sim: virtual kits on this host (default); serial: a board on --port, or "
        "the boards of --env-file",
    )
    g.addoption("--port", default=None, help="pyserial URL of the board (serial target)")
    g.addoption(
        "--board",
        default=None,
        help="board definition id or file (boards/*.json); default: sim on the sim target",
    )
    g.addoption(
        "--env-file",
        default=None,
        type=Path,
        help="TOML file describing a bench: boards, ports, reset and power (see docs_hil.md)",
    )
    g.addoption(
        "--env-board",
        default=None,
        help="which board of --env-file to test (default: the first)",
    )
    g.addoption(
        "--firmware",
        default=None,
        type=Path,
        help="MicroPython image to flash before deploying (serial target; default: keep)",
    )
    g.addoption(
        "--report-dir",
        default=Path("reports"),
        type=Path,
        help="where per-test logs and the checklist summary go (default: reports/)",
    )
    g.addoption(
        "--hil-timeout",
        default=180.0,
        type=float,
        help="seconds each HIL test's setup and call may take (default 180; 0: no limit)",
    )


def is_hil(item: pytest.Item) -> bool:
    return HIL_DIR in Path(item.path).resolve().parents


@dataclass
class HilSession:
    config: pytest.Config
    report_dir: Path
    started: float
    options: TargetOptions
    _target: Target | None = None
    target_error: str | None = None
    ran_hil: bool = False  # this process collected HIL tests (and so made its target)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # Under pytest-xdist: what each worker that ran HIL tests said about its target
    # ({"meta": ..., "components": ...}), gathered on the controller, which writes the
    # one summary from the test reports the workers send it.
    from_workers: list[dict] = field(default_factory=list)
    paths: dict[str, Path] | None = None
    final_components: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: pytest.Config) -> HilSession:
        report_dir = Path(config.getoption("--report-dir"))
        if not report_dir.is_absolute():
            report_dir = Path(config.invocation_params.dir) / report_dir
        opts = TargetOptions(
            target=config.getoption("--target"),
            port=config.getoption("--port"),
            board=config.getoption("--board"),
            env_file=config.getoption("--env-file"),
            env_board=config.getoption("--env-board"),
            firmware=config.getoption("--firmware"),
        )
        return cls(config, report_dir, time.time(), opts)

    @property
    def target(self) -> Target | None:
        """The target, made on first use; None (with ``target_error``) if it cannot be."""
        if self._target is None and self.target_error is None:
            try:
                self._target = make_target(self.options)
            except (UserError, NotSupportedError, OSError, ValueError) as exc:
                self.target_error = str(exc)
        return self._target

    def require_target(self) -> Target:
        t = self.target
        if t is None:
            pytest.skip(f"HIL target unavailable: {self.target_error}")
        return t

    def components(self) -> dict[str, str]:
        t = self.target
        if t is None:
            return {}
        return {c["id"]: f"{c['id']} ({c['kind']}, {c['driver']})" for c in t.board.components}

    def meta(self) -> dict:
        t = self.target
        info = t.info() if t else None
        return {
            "target": info.description if info else f"{self.options.name()}: {self.target_error}",
            "board": info.board if info else (self.options.board or ""),
            "firmware": _firmware_version(),
            "commit": _commit(),
            "host": platform.node(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started)),
            "duration": f"{time.time() - self.started:.1f} s",
        }

    def close(self) -> None:
        if self._target is not None:
            self._target.close()


def is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process (the controller writes the summary)."""
    return hasattr(config, "workerinput")


def is_distributed(config: pytest.Config) -> bool:
    """True on a pytest-xdist controller that hands tests to workers (``-n N``)."""
    n = getattr(config.option, "numprocesses", None)
    return not is_worker(config) and n not in (None, 0) and config.option.dist != "no"


def hil_session(config: pytest.Config) -> HilSession:
    s = config.stash.get(_SESSION, None)
    if s is None:
        s = config.stash[_SESSION] = HilSession.from_config(config)
    return s


def _firmware_version() -> str:
    m = re.search(r'VERSION\s*=\s*"([^"]+)"', (FIRMWARE / "tk/version.py").read_text())
    return m.group(1) if m else "?"


def _commit() -> str:
    """The checked-out commit, read from .git without running git."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        f = git / ref
        if f.exists():
            return f"{f.read_text().strip()[:12]} ({ref.rsplit('/', 1)[-1]})"
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return f"{line.split()[0][:12]} ({ref.rsplit('/', 1)[-1]})"
    except OSError:
        pass
    return ""
