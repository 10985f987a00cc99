"""``thingkit validate``: build the target and cloud a command line names, and run the
checklist engine (:mod:`host_tools.validate.engine`) on them.

:func:`validate` is the library entry point; :func:`validate_sim` the default run (a
virtual kit against a fresh local bench, in a temporary directory unless one is given).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import REPO
from host_tools.validate import checklist as cl
from host_tools.validate.cloud import BenchCloud, Cloud, RemoteCloud
from host_tools.validate.engine import Progress, run


@dataclass(frozen=True)
class CloudSpec:
    """``--cloud bench`` (default) or ``--cloud remote`` with its endpoint and identities."""

    kind: str = "bench"
    endpoint: str | None = None
    port: int = 8883
    operator_cert: Path | None = None
    operator_key: Path | None = None
    ca: Path | None = None
    bundle: Path | None = None

    def make(self, workdir: Path) -> Cloud:
        if self.kind == "bench":
            return BenchCloud(workdir / "bench")
        if self.kind != "remote":
            raise UserError(f"unknown cloud {self.kind!r}", "use bench or remote")
        need = {
            "--endpoint HOST": self.endpoint,
            "--operator-cert FILE": self.operator_cert,
            "--operator-key FILE": self.operator_key,
            "--bundle DIR": self.bundle,
        }
        lacking = [k for k, v in need.items() if not v]
        if lacking:
            raise UserError(
                f"--cloud remote needs {', '.join(lacking)}",
                "the broker, an operator identity that may observe the kit, and the kit's "
                "device bundle made for that cloud",
                "docs/validate.rst",
            )
        assert self.endpoint and self.operator_cert and self.operator_key and self.bundle
        return RemoteCloud(
            self.endpoint, self.port, self.operator_cert, self.operator_key, self.ca, self.bundle
        )


def _hil_importable() -> None:
    """The target layer lives in the checkout's hil_tests/ (shared with the HIL suite);
    thingkit runs from a checkout (its firmware/ too), so make it importable."""
    try:
        import hil_tests.targets  # noqa: F401
    except ModuleNotFoundError:
        sys.path.insert(0, str(REPO))


def make_target(
    target: str = "sim",
    board: str = "sim",
    port: str | None = None,
    env_file: Path | None = None,
    env_board: str | None = None,
):
    """The target of ``--target``, as the HIL suite makes it.

    Raises:
        UserError: a non-sim board on the sim target, or serial without a port.
    """
    _hil_importable()
    from hil_tests.targets import TargetOptions
    from hil_tests.targets import make_target as make
    from host_tools.boards.registry import load_board

    if target == "sim":
        if port or env_file:
            raise UserError("--port and --env-file name boards: they go with --target serial")
        b = load_board(board)  # UserError naming the known boards
        if b.chip != "sim":
            raise UserError(
                f"validate --target sim runs a virtual kit: board {board} is a real board",
                "give a virtual board (sim, sim-ota, sim-romfs), or validate the real one "
                f"with --target serial --port URL --board {board}",
            )
    opts = TargetOptions(
        target=target, port=port, board=board, env_file=env_file, env_board=env_board
    )
    return make(opts)


@contextmanager
def _workdir(root: Path | None) -> Iterator[Path]:
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
        yield Path(root)
        return
    with tempfile.TemporaryDirectory(prefix="thingkit-validate-") as d:
        yield Path(d)


def validate(
    target: str = "sim",
    board: str = "sim",
    port: str | None = None,
    env_file: Path | None = None,
    cloud: CloudSpec | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[list[cl.Result], dict]:
    """Run the checklist on one kit of ``target`` against ``cloud`` (default: a bench of
    its own). Results in checklist order, and the report's metadata."""
    spec = cloud or CloudSpec()
    with _workdir(workdir) as root:
        cl_obj = spec.make(root)
        tgt = make_target(target, board, port, env_file)
        results, meta = run(tgt, cl_obj, root, progress)
    meta["cloud_kind"] = spec.kind
    return results, meta


def validate_sim(
    root: Path | None = None, progress: Progress | None = None
) -> tuple[list[cl.Result], dict]:
    """The default run: a virtual kit (board sim) against a fresh local bench."""
    t0 = time.time()
    results, meta = validate(workdir=root, progress=progress)
    meta.setdefault("duration_s", round(time.time() - t0, 2))
    return results, meta
