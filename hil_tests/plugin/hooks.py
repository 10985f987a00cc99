"""pytest hooks of the HIL plugin: options, markers, skips, time limits, reports.

Markers:

- ``checklist(*ids)``: the checklist items (shared/CHECKLISTS.md) a test shows; an
  unknown id is a collection error. ``app2.*``: every component of the board.
- ``capability(*names)``: what the test needs of the target beyond the common device
  API (``virtual_kit``, ``live_fs``, ``power_cut``, ``rtc_set``, ``sim_hw``).
- ``board_feature(*features)``: a component id, kind or driver the board must have.
- ``hil_timeout(seconds)``: this test's time limit.

Tests without markers get them from :mod:`hil_tests.plugin.mapping`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Generator
from pathlib import Path

import pytest

from hil_tests.plugin import checklist, mapping
from hil_tests.plugin import report as rpt
from hil_tests.plugin.artifacts import Artifacts, dir_name_for
from hil_tests.plugin.session import ARTIFACTS, add_options, hil_session, is_hil
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
    hil_session(config)


def _marker_args(item: pytest.Item, name: str) -> list[str]:
    return [a for m in item.iter_markers(name) for a in m.args]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    s = hil_session(config)
    hil_items = [i for i in items if is_hil(i)]
    if not hil_items:
        return
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
    if art is not None and not art.empty() and (report.when == "call" or first_failure):
        out = s.report_dir / dir_name_for(item.nodeid)
        files = art.write(out)
        rel = _shown(out, s.report_dir)
        item.user_properties.append(("artifacts", rel))
        if report.failed:
            listing = "\n".join(str(f) for f in files) or "(nothing recorded)"
            report.sections.append(("thingkit HIL artifacts", listing))
    _record(s, item, report)


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base.parent))
    except ValueError:
        return str(path)


def _record(s, item: pytest.Item, report: pytest.TestReport) -> None:
    """Fold one phase's report into the test's outcome for the summary."""
    props = dict(item.user_properties)
    o = s.outcomes.get(item.nodeid)
    if o is None:
        o = s.outcomes[item.nodeid] = rpt.Outcome(
            item.nodeid,
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
            if o.outcome == rpt.XPASSED:
                item.user_properties.append(("hil_outcome", rpt.XPASSED))
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


def pytest_sessionstart(session: pytest.Session) -> None:
    _clear_previous(hil_session(session.config).report_dir)


def _clear_previous(report_dir: Path) -> None:
    """Remove the per-test directories the previous run listed in its summary."""
    try:
        prev = json.loads((report_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return
    for t in prev.get("tests", []):
        d = t.get("artifacts")
        if d and not Path(d).is_absolute() and ".." not in Path(d).parts:
            shutil.rmtree(report_dir.parent / d, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = hil_session(session.config)
    try:
        if s.outcomes:
            s.paths = rpt.write(  # type: ignore[attr-defined]
                s.report_dir, list(s.outcomes.values()), s.components(), s.meta()
            )
    finally:
        s.close()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    s = hil_session(config)
    paths = getattr(s, "paths", None)
    if not paths:
        return
    results = rpt.summarize(list(s.outcomes.values()), s.components())
    c = rpt.counts(results)
    not_met = [r.id for r in results if r.status == rpt.NOT_MET]
    terminalreporter.write_sep("-", "thingkit HIL checklist")
    terminalreporter.write_line(
        f"{c[rpt.MET]} met, {c[rpt.NOT_MET]} not met{' (' + ', '.join(not_met) + ')' if not_met else ''}, "
        f"{c[rpt.NOT_RUN]} not run, {c[rpt.NO_TEST]} without a HIL test; "
        f"summary {paths['md']} (also .html, .json); per-test logs in {s.report_dir}/<test>/"
    )
