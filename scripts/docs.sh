#!/usr/bin/env bash
# Build the documentation in its three formats (Appendix B: hw.docs_formats):
#   docs/_build/html/         multi-page HTML
#   docs/_build/singlehtml/   single-page HTML
#   docs/_build/pdf/thingkit.pdf
# Idempotent set-up first: thingkit's .venv (scripts/dev.sh setup) if missing, Debian's
# Pango for WeasyPrint if missing, the pinned docs packages (docs/requirements.txt).
#   bash scripts/docs.sh            all three
#   bash scripts/docs.sh html       only the given builders (html, singlehtml, pdf)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import host_tools' 2>/dev/null; then
  bash scripts/dev.sh setup
fi

# WeasyPrint (the PDF renderer) loads Pango through ctypes; fonts for the text.
need_apt=()
ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so.0' || need_apt+=(libpango-1.0-0)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)  # diagrams (sphinx.ext.graphviz)
ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0.so.0' || need_apt+=(libpangoft2-1.0-0)
[ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "docs: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp=.venv/.thingkit-docs-installed
if [ ! -f "$stamp" ] || [ docs/requirements.txt -nt "$stamp" ]; then
  echo "docs: installing the documentation tools into .venv"
  .venv/bin/pip install -q -r docs/requirements.txt
  touch "$stamp"
fi

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

builders=("$@")
[ ${#builders[@]} -gt 0 ] || builders=(html singlehtml pdf)
out=docs/_build
t_all=$(date +%s.%N)
for b in "${builders[@]}"; do
  case "$b" in
    html | singlehtml) sb=$b dir=$out/$b ;;
    pdf) sb=simplepdf dir=$out/pdf ;;
    *) echo "usage: bash scripts/docs.sh [html|singlehtml|pdf]..." >&2; exit 2 ;;
  esac
  t0=$(date +%s.%N)
  rm -rf "$dir"  # no stale pages from removed sources
  # -W: warnings are errors; -n: every reference must resolve; -q: only problems.
  # sphinx-simplepdf prints its own progress notes: drop those, keep everything else.
  set +e
  .venv/bin/python -m sphinx -b "$sb" -W --keep-going -n -q -d "$out/doctrees-$b" docs "$dir" \
    2>&1 | grep -v -e '^checking for potential toctree' -e '^found duplicate chapters' \
      -e "^{'<a class=" -e '^fsSelection bits 7, 8 and 9'
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || { echo "docs: $b build failed (sphinx exit $rc)" >&2; exit 1; }
  printf 'docs: %-10s -> %s (%.1f s)\n' "$b" "$dir" "$(since "$t0")"
done
if [[ " ${builders[*]} " == *" pdf "* ]]; then
  printf 'docs: PDF %s, %s bytes\n' "$out/pdf/thingkit.pdf" "$(stat -c %s "$out/pdf/thingkit.pdf")"
fi
printf 'docs: built %s in %.1f s\n' "${builders[*]}" "$(since "$t_all")"
