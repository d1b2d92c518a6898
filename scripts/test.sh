#!/usr/bin/env bash
# Install everything, build/start the engines the tests need, and run all checks and tests.
#   scripts/test.sh            lint, types, and the default test suite (about 20 minutes)
#   VECMIGRATE_SLOW=1 scripts/test.sh   also the long runs marked "slow"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -x scripts/engines/build-redis.sh ]; then
  scripts/engines/build-redis.sh || echo "test: Redis 8 could not be built; its tests will be skipped"
fi
# Debian's Chromium renders the validation report in a test (skipped where it is missing).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
    || echo "test: chromium could not be installed; the report rendering test will be skipped"
fi
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/mypy
MARK="not slow"
if [ "${VECMIGRATE_SLOW:-0}" = "1" ]; then MARK=""; fi
.venv/bin/python -m pytest -m "${MARK}" -p no:cacheprovider "$@"
