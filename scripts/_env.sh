# Shared by demo.sh and test.sh: makes .venv (idempotent) and installs the project into it.
# Re-installs only when a pyproject.toml changed (a stamp file keeps their hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "simad needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=..." >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY="$ROOT/.venv/bin/python"
install_extras() {  # $1: extras spec, e.g. "[test]"
  local stamp=".venv/.simad-installed$1"
  local want
  want="$( (cat pyproject.toml; cat clients/python/pyproject.toml 2>/dev/null || true) | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VPY" -m pip install -q --disable-pip-version-check -e ".$1"
    echo "$want" > "$stamp"
  fi
}
