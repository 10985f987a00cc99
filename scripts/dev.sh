#!/usr/bin/env bash
# One entry point for a fresh Debian machine (root, Python 3.11, package registries only).
#   bash scripts/dev.sh validate   set up, then validate the virtual kit end to end
#   bash scripts/dev.sh test       set up, then run the whole test suite
#   bash scripts/dev.sh setup      set up only
# Set-up is idempotent: Debian packages (mosquitto, faketime), a virtual environment in
# .venv with thingkit and its pinned tools, and the pinned device-side packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
[ -n "$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null)" ] || need_apt+=(faketime)
# Debian's Chromium for the live view's browser tests (Playwright drives it; the
# registries give the browser package, not a Playwright browser download).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)   # the docs' diagrams
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.thingkit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing thingkit and its tools into .venv"
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
# The documentation tools: the docs build needs them, and so do the tests that check the
# docs (tests/host/test_docs.py imports docutils), so `.venv/bin/python -m pytest` works
# right after set-up. scripts/docs.sh keeps the same stamp.
docs_stamp=.venv/.thingkit-docs-installed
if [ ! -f "$docs_stamp" ] || [ docs/requirements.txt -nt "$docs_stamp" ]; then
  echo "setup: installing the documentation tools into .venv"
  .venv/bin/pip install -q -r docs/requirements.txt
  touch "$docs_stamp"
fi
.venv/bin/thingkit deps fetch
# Type stubs of MicroPython's ESP32 port, for the portability check (kept out of the
# venv's site-packages, where they would shadow CPython's own stubs for host code).
stubs=.thingkit/stubs/esp32
if [ ! -f "$stubs/machine.pyi" ]; then
  echo "setup: installing micropython-esp32-stubs into $stubs"
  .venv/bin/pip install -q --target "$stubs" micropython-esp32-stubs==1.29.0.post1
fi
# A 32-bit MicroPython for the memory figures: the official WebAssembly port from npm,
# run by Node.js (host_tools/kit/wasm32, docs/memory.rst). Debian's nodejs if none.
wasm_pkg=@micropython/micropython-webassembly-pyscript@1.27.0
wasm_dir=.thingkit/wasm32
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Debian packages: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! grep -qs '"version": "1.27.0"' "$wasm_dir/node_modules/@micropython/micropython-webassembly-pyscript/package.json"; then
  echo "setup: installing $wasm_pkg into $wasm_dir"
  mkdir -p "$wasm_dir"
  npm install --prefix "$wasm_dir" --no-save --no-audit --no-fund --loglevel=error "$wasm_pkg" >/dev/null
fi

cmd=${1:-setup}
shift || true
case "$cmd" in
  setup) ;;
  validate) exec .venv/bin/thingkit validate --board sim "$@" ;;
  test)
    # The documentation in its three formats and the Appendix B audit are part of the
    # tests: a change that breaks either fails here, as in CI. The HTML and single-page
    # builds (with the same -W -n flags) are tests in tests/host/test_docs.py; the PDF
    # builds here, beside the tests, its output kept in reports/docs-pdf.log.
    t0=$(date +%s)
    mkdir -p reports
    bash scripts/docs.sh pdf >reports/docs-pdf.log 2>&1 &
    docs_pid=$!
    rc=0
    .venv/bin/thingkit audit || rc=$?
    # Python may keep bytecode (__pycache__/, git-ignored): hundreds of subprocesses
    # import host_tools, and each worker imports every test module.
    unset PYTHONDONTWRITEBYTECODE
    .venv/bin/python -m pytest -q -p no:cacheprovider --collect-only >/dev/null 2>&1 || true
    # Tests run in parallel (pytest-xdist), the longest first (conftest.py): most wait on
    # virtual kits and a broker, so more workers than CPUs pays; each worker has its own
    # benches, kits, ports and temporary files. TK_TEST_WORKERS=0: one after another.
    workers=${TK_TEST_WORKERS:-10}
    dist=(-n "$workers")
    [ "$workers" = 0 ] || dist+=(--dist loadgroup)
    .venv/bin/python -m pytest -q -p no:cacheprovider "${dist[@]}" --durations=15 "$@" || {
      tests_rc=$?
      [ "$rc" -ne 0 ] || rc=$tests_rc
    }
    docs_rc=0
    wait "$docs_pid" || docs_rc=$?
    if [ "$docs_rc" -ne 0 ]; then
      cat reports/docs-pdf.log >&2
      echo "test: the PDF documentation does not build (exit $docs_rc)" >&2
      [ "$rc" -ne 0 ] || rc=$docs_rc
    else
      tail -n 1 reports/docs-pdf.log
    fi
    # With --junitxml=FILE (as .ci/run passes): the slowest tests and the wall time.
    junit=
    for arg in "$@"; do
      case "$arg" in
        --junitxml=*) junit=${arg#--junitxml=} ;;
      esac
    done
    if [ -n "$junit" ] && [ -f "$junit" ]; then
      .venv/bin/python -m benchmarks.slow_tests "$junit" --top 25 >"${junit%.xml}-slowest.txt"
      head -n 4 "${junit%.xml}-slowest.txt"
      echo "test: slowest tests in ${junit%.xml}-slowest.txt"
    fi
    echo "test: docs, audit and tests in $(($(date +%s) - t0)) s (exit $rc)"
    exit "$rc" ;;
  *) echo "usage: bash scripts/dev.sh [setup|validate|test] [args...]" >&2; exit 2 ;;
esac
