"""The HIL suite's pytest plugin: targets chosen by configuration, capability and
board-feature skips, time limits, per-test artifacts, and the checklist summary.

Loaded by ``hil_tests/conftest.py``; see ``docs_hil.md`` for the options and reports.
"""
