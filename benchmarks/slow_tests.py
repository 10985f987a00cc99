"""The slowest tests of a pytest run, from its JUnit XML: a benchmark-style report.

pytest's ``--junitxml`` records each test's time (setup + call + teardown) and the
run's wall time (the ``testsuite`` element's ``time``, which under pytest-xdist is the
controller's wall clock, not the sum of the workers' times)::

    bash .ci/run                                    # writes reports/junit.xml
    python -m benchmarks.slow_tests reports/junit.xml --top 25
    python -m benchmarks.slow_tests reports/junit.xml --json > slow.json
    python -m benchmarks.slow_tests reports/junit.xml --save-durations tests/durations.json

The report gives the wall time, the summed test time and their ratio (how much of the
work ran in parallel), the outcome counts, the slowest tests, and the time per file
(what decides how the run can be split across workers).

``--save-durations`` keeps each test's time (those of a second or more) in a JSON file;
the suite's conftest.py hands the longest tests out first from it (a stale file only
makes the order less good).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Case:
    """One test case of the XML: its pytest node id (rebuilt), outcome and seconds."""

    nodeid: str
    outcome: str
    seconds: float


@dataclass
class RunReport:
    """What one run's XML says about time."""

    source: str
    wall_s: float
    tests_s: float
    counts: dict[str, int]
    slowest: list[Case]
    by_file: list[tuple[str, float, int]] = field(default_factory=list)  # file, s, tests

    @property
    def parallelism(self) -> float:
        """Summed test time over wall time (1.0: one at a time)."""
        return self.tests_s / self.wall_s if self.wall_s else 0.0


def _nodeid(tc: ET.Element) -> str:
    """``tests/host/test_x.py::TestC::test_y`` from classname ``tests.host.test_x.TestC``
    and name ``test_y`` (the file is the longest prefix of the classname that exists)."""
    parts = (tc.get("classname") or "").split(".")
    name = tc.get("name") or "?"
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if Path(path).exists() or i == 1:
            return "::".join([path, *parts[i:], name])
    return name


def _outcome(tc: ET.Element) -> str:
    for child in tc:
        if child.tag == "skipped":
            return "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        if child.tag in ("failure", "error"):
            return {"failure": "failed", "error": "error"}[child.tag]
    return "passed"


def read(path: Path, top: int = 30) -> RunReport:
    """Parse a pytest JUnit XML file.

    Raises:
        OSError, xml.etree.ElementTree.ParseError: the file cannot be read.
    """
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    wall = sum(float(s.get("time", 0) or 0) for s in suites)
    cases = [
        Case(_nodeid(tc), _outcome(tc), float(tc.get("time", 0) or 0))
        for s in suites
        for tc in s.iter("testcase")
    ]
    counts: dict[str, int] = defaultdict(int)
    files: dict[str, list[float]] = defaultdict(list)
    for c in cases:
        counts[c.outcome] += 1
        files[c.nodeid.split("::", 1)[0]].append(c.seconds)
    by_file = sorted(((f, sum(t), len(t)) for f, t in files.items()), key=lambda r: -r[1])
    return RunReport(
        source=str(path),
        wall_s=wall,
        tests_s=sum(c.seconds for c in cases),
        counts=dict(counts),
        slowest=sorted(cases, key=lambda c: -c.seconds)[:top],
        by_file=by_file,
    )


def durations(path: Path, at_least: float = 1.0) -> dict[str, float]:
    """Node id -> seconds of every test of the XML that took ``at_least`` seconds."""
    root = ET.parse(path).getroot()
    out = {}
    for tc in root.iter("testcase"):
        t = float(tc.get("time", 0) or 0)
        if t >= at_least:
            out[_nodeid(tc)] = round(t, 1)
    return dict(sorted(out.items()))


def _mmss(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s"


def render(r: RunReport, files: int = 15) -> str:
    """The report as plain text."""
    lines = [
        f"run {r.source}",
        f"  wall time   {_mmss(r.wall_s)} ({r.wall_s:.1f} s)",
        f"  test time   {_mmss(r.tests_s)} summed ({r.parallelism:.2f}x the wall time)",
        "  tests       " + ", ".join(f"{n} {k}" for k, n in sorted(r.counts.items())),
        "",
        f"slowest {len(r.slowest)} tests (setup + call + teardown):",
    ]
    lines += [f"  {c.seconds:7.2f} s  {c.outcome:8} {c.nodeid}" for c in r.slowest]
    lines += ["", f"slowest {min(files, len(r.by_file))} files:"]
    lines += [f"  {s:7.2f} s  {n:4d} tests  {f}" for f, s, n in r.by_file[:files]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.slow_tests",
        description="Report the slowest tests and the wall time of a pytest run from its "
        "JUnit XML (pytest --junitxml=FILE).",
    )
    p.add_argument("junit", type=Path, help="JUnit XML file written by pytest")
    p.add_argument("--top", type=int, default=30, help="how many tests to list (default 30)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--save-durations",
        type=Path,
        metavar="FILE",
        help="write node id -> seconds of the tests of 1 s or more (tests/durations.json)",
    )
    args = p.parse_args(argv)
    try:
        r = read(args.junit, args.top)
        if args.save_durations:
            d = durations(args.junit)
            args.save_durations.write_text(json.dumps(d, indent=0) + "\n")
            print(f"slow_tests: {len(d)} durations in {args.save_durations}", file=sys.stderr)
    except (OSError, ET.ParseError) as exc:
        print(f"slow_tests: cannot read {args.junit}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**asdict(r), "parallelism": round(r.parallelism, 2)}, indent=1))
    else:
        print(render(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
