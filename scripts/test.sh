#!/usr/bin/env bash
# Sets up .venv with the test extras (idempotent) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k kinematics`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
install_extras "[test]"
exec "$VPY" -m pytest -q --durations=25 -n "${SIMAD_TEST_WORKERS:-2}" --dist loadfile "$@"
