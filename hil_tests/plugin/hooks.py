"""pytest hooks of the HIL plugin: options, markers, skips, time limits, reports.

Markers:

- ``checklist(*ids)``: the checklist items (shared/CHECKLISTS.md) a test shows; an
  unknown id is a collection error. ``app2.*``: every component of the board.
- ``capability(*names)``: what the test needs of the target beyond the common device
  API (``virtual_kit``, ``live_fs``, ``power_cut``, ``rtc_set``, ``sim_hw``).
- ``board_feature(*features)``: a component id, kind or driver the board must have.
- ``hil_timeout(seconds)``: this test's time limit.

Tests without markers get them from :mod:`hil_tests.plugin.mapping`.

Under pytest-xdist (``-n N``) each worker has its own target, benches and kits and writes
its tests' artifacts (one directory per test); the controller folds the test reports the
workers send it into one summary, and pytest's own ``--junitxml`` is written there too.
A serial target drives one board, so it refuses ``-n``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from hil_tests.plugin import checklist, mapping
from hil_tests.plugin import report as rpt
from hil_tests.plugin.artifacts import Artifacts, dir_name_for
from hil_tests.plugin.session import (
    ARTIFACTS,
    HilSession,
    add_options,
    hil_session,
    is_distributed,
    is_hil,
    is_worker,
)
from hil_tests.plugin.timeout import bounded, limit_for

MARKERS = (
    "checklist(*ids): checklist items (shared/CHECKLISTS.md) this HIL test shows",
    (
        "capability(*names): what the test needs of the HIL target (virtual_kit, live_fs, "
        "power_cut, rtc_set, sim_hw)"
    ),
    "board_feature(*features): component ids, kinds or drivers the board must have",
    "hil_timeout(seconds): time limit of this HIL test's setup and call",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for m in MARKERS:
        config.addinivalue_line("markers", m)
    s = hil_session(config)
    if is_distributed(config) and s.options.name() == "serial":
        raise pytest.UsageError(
            "the serial target drives one board at a time: run the HIL tests without -n"
        )
    config.pluginmanager.register(_Recorder(s), "thingkit-hil-recorder")


def _marker_args(item: pytest.Item, name: str) -> list[str]:
    return [a for m in item.iter_markers(name) for a in m.args]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    s = hil_session(config)
    hil_items = [i for i in items if is_hil(i)]
    if not hil_items:
        return
    s.ran_hil = True
    target = s.target
    bad = []
    for item in hil_items:
        entry = mapping.lookup(item.nodeid)
        if entry is not None:
            if entry.checklist and not item.get_closest_marker("checklist"):
                item.add_marker(pytest.mark.checklist(*entry.checklist))
            if entry.capabilities and not item.get_closest_marker("capability"):
                item.add_marker(pytest.mark.capability(*entry.capabilities))
        ids = _marker_args(item, "checklist")
        unknown = [i for i in ids if not checklist.is_known(i)]
        if unknown:
            bad.append(f"{item.nodeid}: unknown checklist id(s) {', '.join(unknown)}")
        item.user_properties += [
            ("hil_nodeid", item.nodeid),
            ("checklist", " ".join(ids)),
            ("hil_target", s.options.name()),
            ("hil_components", json.dumps(s.components())),
        ]
        reason = _skip_reason(item, target, s.target_error, entry)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    if bad:
        raise pytest.UsageError("checklist markers:\n  " + "\n  ".join(bad))


def _skip_reason(item, target, target_error, entry) -> str | None:
    if target is None:
        return f"HIL target unavailable: {target_error}"
    need = set(_marker_args(item, "capability"))
    missing = target.missing(need)
    if missing:
        why = f" (the test {entry.why})" if entry is not None and entry.why else ""
        return (
            f"target {target.name} lacks {', '.join(sorted(missing))}{why}; "
            f"it has {', '.join(sorted(target.capabilities)) or 'nothing extra'}"
        )
    lacks = [f for f in _marker_args(item, "board_feature") if not target.board.has(f)]
    if lacks:
        return f"board {target.board.id} has no {', '.join(lacks)} (boards/{target.board.id}.json)"
    return None


# -- time limits and artifacts -----------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    if not is_hil(item):
        yield
        return
    item.stash[ARTIFACTS] = Artifacts()
    limit = limit_for(item, item.config.getoption("--hil-timeout"))
    with bounded(limit, f"setup of {item.nodeid}"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if not is_hil(item):
        yield
        return
    limit = limit_for(item, item.config.getoption("--hil-timeout"))
    with bounded(limit, item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator:
    outcome = yield
    if not is_hil(item):
        return
    report: pytest.TestReport = outcome.get_result()
    s = hil_session(item.config)
    art = item.stash.get(ARTIFACTS, None)
    first_failure = report.when == "setup" and report.failed
    added: list[tuple[str, str]] = []
    if art is not None and not art.empty() and (report.when == "call" or first_failure):
        out = s.report_dir / dir_name_for(item.nodeid)
        files = art.write(out)
        # Relative to the report directory, where the summary that links to it lives.
        added.append(("artifacts", out.relative_to(s.report_dir).as_posix()))
        if report.failed:
            listing = "\n".join(str(f) for f in files) or "(nothing recorded)"
            report.sections.append(("thingkit HIL artifacts", listing))
    if report.when == "call" and getattr(report, "wasxfail", None) is not None and report.passed:
        added.append(("hil_outcome", rpt.XPASSED))
    # The item's properties go to the JUnit XML (with the teardown report); the report's
    # go to whoever folds reports into the summary (this process, or the xdist controller).
    item.user_properties += added
    report.user_properties += added


class _Recorder:
    """Folds test reports into the summary's outcomes where the summary is written: the
    only process, or the xdist controller (which gets every worker's reports)."""

    def __init__(self, session: HilSession) -> None:
        self.s = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not is_worker(self.s.config):
            _record(self.s, report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:  # pytest-xdist's hook
        data = getattr(node, "workeroutput", {}).get("thingkit_hil")
        if data:
            self.s.from_workers.append(data)


def _record(s: HilSession, report: pytest.TestReport) -> None:
    """Fold one phase's report of a HIL test into the test's outcome for the summary."""
    props = {k: v for k, v in report.user_properties}
    if "hil_nodeid" not in props:
        return  # not a HIL test
    o = s.outcomes.get(report.nodeid)
    if o is None:
        o = s.outcomes[report.nodeid] = rpt.Outcome(
            report.nodeid,
            rpt.PASSED,
            checklist=props.get("checklist", "").split(),
            target=props.get("hil_target", ""),
        )
    o.duration += report.duration
    o.artifacts = props.get("artifacts", o.artifacts)
    wasxfail = getattr(report, "wasxfail", None)
    if report.when == "setup":
        if report.skipped:
            o.outcome, o.detail = rpt.SKIPPED, _skip_text(report)
        elif report.failed:
            o.outcome, o.detail = rpt.ERROR, _fail_text(report)
    elif report.when == "call":
        if wasxfail is not None:
            o.outcome = rpt.XFAILED if report.skipped else rpt.XPASSED
            o.detail = wasxfail or "known failure"
        elif report.failed:
            o.outcome, o.detail = rpt.FAILED, _fail_text(report)
        elif report.skipped:
            o.outcome, o.detail = rpt.SKIPPED, _skip_text(report)
    elif report.when == "teardown" and report.failed and o.outcome == rpt.PASSED:
        o.outcome, o.detail = rpt.ERROR, "teardown: " + _fail_text(report)


def _skip_text(report: pytest.TestReport) -> str:
    lr = report.longrepr
    return str(lr[2]).removeprefix("Skipped: ") if isinstance(lr, tuple) else str(lr)


def _fail_text(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0] if text.strip() else "failed"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if not is_worker(session.config):  # before any worker writes this run's artifacts
        _clear_previous(hil_session(session.config).report_dir)


def _clear_previous(report_dir: Path) -> None:
    """Remove the per-test directories the previous run listed in its summary."""
    try:
        prev = json.loads((report_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return
    for t in prev.get("tests", []):
        d = t.get("artifacts")
        if not d or Path(d).is_absolute() or ".." in Path(d).parts:
            continue
        path = report_dir / d
        if not path.exists() and Path(d).parts[0] == report_dir.name:
            path = report_dir.parent / d  # written before links were report-relative
        shutil.rmtree(path, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = hil_session(session.config)
    try:
        if is_worker(session.config):
            if s.ran_hil:
                session.config.workeroutput["thingkit_hil"] = {  # type: ignore[attr-defined]
                    "meta": s.meta(),
                    "components": s.components(),
                }
        elif s.outcomes:
            s.final_components, meta = _target_facts(s)
            outcomes = list(s.outcomes.values())  # in the order the tests ran
            if s.from_workers:  # ... on several workers at once: by test id instead
                outcomes.sort(key=lambda o: o.nodeid)
            s.paths = rpt.write(s.report_dir, outcomes, s.final_components, meta)
    finally:
        s.close()


def _target_facts(s: HilSession) -> tuple[dict[str, str], dict]:
    """The board's components and the run's description: the workers' under xdist (each
    made its own target; the controller makes none), else this process's."""
    if not s.from_workers:
        return s.components(), s.meta()
    components: dict[str, str] = {}
    for w in s.from_workers:
        for k, v in w["components"].items():
            components.setdefault(k, v)
    mine = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.started)),
        "duration": f"{time.time() - s.started:.1f} s",
        "workers": str(len(s.from_workers)),
    }
    return components, {**s.from_workers[0]["meta"], **mine}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    s = hil_session(config)
    paths = s.paths
    if not paths:
        return
    results = rpt.summarize(list(s.outcomes.values()), s.final_components)
    c = rpt.counts(results)
    not_met = [r.id for r in results if r.status == rpt.NOT_MET]
    terminalreporter.write_sep("-", "thingkit HIL checklist")
    terminalreporter.write_line(
        f"{c[rpt.MET]} met, {c[rpt.NOT_MET]} not met{' (' + ', '.join(not_met) + ')' if not_met else ''}, "
        f"{c[rpt.NOT_RUN]} not run, {c[rpt.NO_TEST]} without a HIL test; "
        f"summary {paths['md']} (also .html, .json); per-test logs in {s.report_dir}/<test>/"
    )
