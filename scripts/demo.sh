#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the main job: the simad demo (a real server on 127.0.0.1,
# the arm's reach around an obstacle planned remotely; plots in demo-output/).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
install_extras "[demo]"
exec "$VPY" examples/reach_demo.py "$@"
