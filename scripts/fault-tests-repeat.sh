#!/usr/bin/env bash
# Runs every fault test (each fault made at a failpoint) N times in a row and counts passes per test.
# Usage: bash scripts/fault-tests-repeat.sh [N] [pytest args...]   (default N=10; from the repo root)
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
shift || true
tests=(
  tests/study/test_faults.py
  "tests/study/test_fault_guards.py::test_a_running_study_is_locked_and_resume_ends_what_a_killed_driver_left"
  "tests/study/test_fault_guards.py::test_a_driver_ended_with_sigterm_ends_its_ray_and_releases_the_study"
  "tests/study/test_confirm_study.py::test_driver_killed_during_confirm_then_resume_runs_exactly_the_planned_trials"
  "tests/pipelines/test_shared_cache.py::test_a_builder_killed_while_publishing_leaves_nothing_and_is_taken_over"
  "tests/results/test_report.py::test_a_report_killed_while_it_is_made_leaves_the_last_report_whole"
  tests/docker/test_cluster_bucket.py
)
log=$(mktemp -d)/fault-runs
mkdir -p "$log"
for i in $(seq 1 "$n"); do
  .venv/bin/pytest -q -p no:cacheprovider -rA "$@" "${tests[@]}" > "$log/run-$i.txt" 2>&1
  echo "round $i: $(tail -n 1 "$log/run-$i.txt")"
done
echo "per test (passed/rounds), logs in $log:"
cat "$log"/run-*.txt | grep -E '^(PASSED|FAILED|ERROR) ' | awk '{print $1, $2}' | sort | uniq -c | sort -k3
