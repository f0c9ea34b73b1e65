#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the main job: the simad demo.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
install_extras ""
exec "$VPY" -m simad.demo "$@"
