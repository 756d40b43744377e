#!/usr/bin/env bash
# Runs pytest; "no tests collected" (exit 5) is not a failure for CI.
"$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest: no tests collected (treated as success)"
  exit 0
fi
exit "$status"
