#!/usr/bin/env bash
# A real migration on embedded engines, end to end: Chroma -> LanceDB (copy + validate),
# LanceDB -> Parquet (export), Parquet -> Chroma (import), then validate the round trip.
# Everything runs locally; results go to ./demo-output (or $DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "dev,lancedb,chroma" >/dev/null
OUT="$(realpath -m "${DEMO_DIR:-demo-output}")"
rm -rf "$OUT"; mkdir -p "$OUT"
VM=".venv/bin/vecmigrate"
export VECMIGRATE_STATE_DIR="$OUT/state"
SRC="chroma://$OUT/chroma?collection=support_articles"
LANCE="lancedb://$OUT/lance?table=support_articles"
BACK="chroma://$OUT/chroma-back?collection=support_articles"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. An application's Chroma collection"
.venv/bin/python scripts/demo.py "$OUT/chroma"

step "2. What carries over to LanceDB (nothing written yet)"
$VM inspect "$SRC" --target "$LANCE"

step "3. Copy Chroma -> LanceDB, then validate (every id, vector, metadata value; query parity)"
$VM copy "$SRC" "$LANCE" --validate --report "$OUT/chroma-to-lancedb.html"

step "4. Export LanceDB -> Parquet dataset (manifest + checksummed shards)"
$VM export "$LANCE" "$OUT/export" --format parquet

step "5. Import the dataset into a new Chroma collection"
$VM import "$OUT/export" "$BACK"

step "6. Validate the round trip against the original"
$VM validate "$SRC" "$BACK" --report "$OUT/round-trip.html" --json > "$OUT/round-trip.json"
.venv/bin/python - "$OUT/round-trip.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["checks"]["completeness"]; m = r["checks"]["metadata"]; q = r["checks"]["query_parity"]
print(f"verdict: {r['verdict'].upper()}")
print(f"  completeness: {c['source_count']:,} source rows, {c['target_count']:,} target rows, "
      f"missing {c['missing_in_target']['count']}, extra {c['extra_in_target']['count']}, "
      f"vectors differing {sum(v['count'] for v in c['vectors_differ'].values())} ({c['tolerance']})")
print(f"  metadata: equal fields {m['fields_equal']}, missing {m['missing_fields'] or 'none'}")
print(f"  query parity: recall@{q['k']} = {q['recall_at_' + str(q['k'])]} over {q['queries']} queries")
PY
step "Done"
echo "reports: $OUT/chroma-to-lancedb.html, $OUT/round-trip.html; dataset: $OUT/export"
