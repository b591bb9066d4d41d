#!/usr/bin/env bash
# bench/crash.sh: the long crash test (issue 7, "Proof under fire").
#
# The storm of bench/storm.sh (10,000 alerts in 100 groups over about a minute, through a REAL
# Alertmanager, one group from a REAL Prometheus), during which nightshift (release build) is
# killed with SIGKILL at random moments and restarted, 20 rounds. Alertmanager reaches it
# through a recording proxy in the test that notes every webhook acknowledged with 200. After
# the last round, once everything has settled, the test checks from the store and the fakes:
# no acknowledged notification lost, every alert an incident, no action run twice (one PATCH
# per action key at the fake API server), every action left started settled (read back, or
# uncertain and escalated), every page delivered (re-sends of one dedup key counted), and no
# partial bundle. The kill moments come from a seed, printed: STORM_SEED=N replays them.
#
# It is the test `storm::crash` in tests/it/storm.rs, sized and run by bench/storm.sh.
#
# Environment (all optional):
#   STORM_ROUNDS=20                kill -9 rounds, spread over 1.5 x STORM_SECONDS (down 0-0.5 s each)
#   and those of bench/storm.sh (STORM_ALERTS, STORM_SEED, STORM_KEEP_DIR, ...)
set -euo pipefail
export STORM_ROUNDS=${STORM_ROUNDS:-20}
STORM_TEST=crash exec "$(dirname "$0")/storm.sh"
