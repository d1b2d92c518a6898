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
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/mypy
MARK="not slow"
if [ "${VECMIGRATE_SLOW:-0}" = "1" ]; then MARK=""; fi
.venv/bin/python -m pytest -m "${MARK}" -p no:cacheprovider "$@"
