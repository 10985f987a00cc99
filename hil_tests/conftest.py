"""HIL fixtures and hooks: a bench, devices of the configured target on it, reports.

The target is chosen by configuration (``--target sim``, the default; ``--target serial
--port URL --board ID``; or ``--env-file bench.toml``); tests never branch on which
target they have. Tests say which checklist items they show and what they need with
markers (``checklist``, ``capability``, ``board_feature``, ``hil_timeout``); the plugin
skips what the target or board cannot run, bounds every test in time, copies each test's
console logs and broker transcript to ``reports/<test>/`` and writes the checklist
summary (``reports/summary.md``, ``.html``, ``.json``). See docs_hil.md.
"""

from __future__ import annotations

from hil_tests.plugin.faults import fault_proxy, proxied_kit, telemetry_ledger  # noqa: F401
from hil_tests.plugin.fixtures import (  # noqa: F401  (fixtures)
    KitFactory,
    _bench_transcript,
    _device_packages,
    bench,
    hil_target,
    make_kit,
    observer,
    own_bench,
)
from hil_tests.plugin.hooks import (  # noqa: F401  (hooks)
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
)
