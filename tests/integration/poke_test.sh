#!/usr/bin/env bash
# poke_test.sh — bad input on a running coordinator's and worker's sockets
# (tests/daemon_poke.c), each refused or dropped while the daemons go on
# serving.
#   poke_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
# Plaintext, so that the oversized frame reaches the SP transport (over TLS
# it would stop at the handshake, which tls_test.sh checks).
use_insecure
"$ROOT/deploy/launch.sh" start cluster 1 >/dev/null || { bad "cluster start"; finish; exit 1; }
waddr=$("$SC" workers --json | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' | head -1)
[ -n "$waddr" ] || bad "no worker address"
if "$BUILD/tests/daemon_poke" "$SPLITCHAIN_COORDINATOR" "$waddr"; then ok "daemon_poke"
else bad "daemon_poke"; fi
# both daemons are still alive
"$ROOT/deploy/launch.sh" status cluster | grep -q "not running" && bad "a daemon died" \
  || ok "coordinator and worker still running"
finish
