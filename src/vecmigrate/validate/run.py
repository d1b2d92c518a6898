"""``validate``: completeness, metadata, parity, latency, accuracy, integration -> a verdict."""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.registry import connect
from vecmigrate.errors import ConfigError
from vecmigrate.uri import redact_text
from vecmigrate.validate.accuracy import LabelledQueries, compare_accuracy, load_qrels, load_queries
from vecmigrate.validate.completeness import check_completeness
from vecmigrate.validate.parity import QuerySample, check_parity


@dataclass
class Thresholds:
    min_recall: float = 0.95
    max_latency_ratio: float | None = None
    max_accuracy_drop: float = 0.0


@dataclass
class ValidateOptions:
    queries: int = 100
    k: int = 10
    query_file: Path | None = None
    qrels: Path | None = None
    check_cmds: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    batch_size: int = 10_000
    skip_completeness: bool = False
    seed: int = 0


@dataclass
class ValidationResult:
    source: str
    target: str
    checks: dict[str, dict[str, Any]]
    elapsed_s: float
    parity_samples: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.get("passed", True) for c in self.checks.values())

    @property
    def failures(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c.get("passed", True)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.passed,
            "verdict": "pass" if self.passed else "fail",
            "failed_checks": self.failures,
            "source": self.source,
            "target": self.target,
            "elapsed_s": round(self.elapsed_s, 3),
            "checks": self.checks,
        }


def _integration(cmds: list[str], target: str) -> dict[str, Any]:
    results = []
    for cmd in cmds:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                shlex.split(cmd), capture_output=True, text=True, timeout=300, check=False,
                env=None,
            )  # fmt: skip
            code, tail = proc.returncode, (proc.stdout + proc.stderr)[-500:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            code, tail = -1, str(exc)
        results.append(
            {
                "cmd": redact_text(cmd),
                "exit_code": code,
                "passed": code == 0,
                "elapsed_s": round(time.perf_counter() - t0, 3),
                "output_tail": redact_text(tail),
            }
        )
    return {"passed": all(r["passed"] for r in results), "target": target, "commands": results}


def validate(
    source_uri: str, target_uri: str, options: ValidateOptions | None = None
) -> ValidationResult:
    """Run every check that applies; each contributes ``passed`` to the verdict."""
    opts = options or ValidateOptions()
    started = time.perf_counter()
    with connect(source_uri) as source, connect(target_uri) as target:
        return validate_connectors(source, target, opts, started)


def validate_connectors(
    source: Connector, target: Connector, opts: ValidateOptions, started: float | None = None
) -> ValidationResult:
    """Validate two open connectors (e.g. wrapped to a segment); see :func:`validate`."""
    started = time.perf_counter() if started is None else started
    spec = source.describe()
    vf = spec.vector()
    checks: dict[str, dict[str, Any]] = {}
    sample = QuerySample(opts.queries, vf.name, seed=opts.seed)
    samples: dict[str, Any] = {}
    if not opts.skip_completeness:
        comp = check_completeness(
            source, target, spec, batch_size=opts.batch_size, on_source_batch=sample.add
        )
        full = comp.as_dict()
        meta_keys = ("metadata_differ", "metadata_fields_missing", "metadata_fields_converted")
        checks["completeness"] = {k: v for k, v in full.items() if k not in meta_keys}
        checks["completeness"]["passed"] = not (
            comp.missing.count or comp.extra.count or comp.duplicates_in_target.count
            or any(d.count for d in comp.vector_diffs.values())
        )  # fmt: skip
        checks["metadata"] = {
            "passed": not (full["metadata_differ"] or full["metadata_fields_missing"]),
            "fields_equal": [
                m.name for m in spec.metadata
                if m.name not in full["metadata_differ"]
                and m.name not in full["metadata_fields_missing"]
            ],
            "differ": full["metadata_differ"],
            "missing_fields": full["metadata_fields_missing"],
            "converted_fields": full["metadata_fields_converted"],
        }  # fmt: skip
    else:
        for part in source.partitions(1):
            for sb in source.scan(part, None, opts.batch_size):
                sample.add(sb.batch)
    if source.capabilities.query and target.capabilities.query:
        if opts.query_file is not None:
            qids, qvecs = load_queries(opts.query_file, vf.name)
        else:
            qids, qvecs = [str(i) for i in sample.ids], sample.vectors
        if len(qvecs):
            parity = check_parity(source, target, qvecs, qids, k=opts.k, vector_field=vf.name)
            pd = parity.as_dict()
            pd["passed"] = parity.mean_recall >= opts.thresholds.min_recall
            pd["min_recall"] = opts.thresholds.min_recall
            checks["query_parity"] = {k: v for k, v in pd.items() if k != "latency"}
            lat: dict[str, Any] = dict(pd["latency"])
            bound = opts.thresholds.max_latency_ratio
            lat["max_latency_ratio"] = bound
            lat["passed"] = bound is None or parity.latency_ratio <= bound
            checks["latency"] = lat
            samples = {
                "source_ms": parity.source_latency.samples_ms,
                "target_ms": parity.target_latency.samples_ms,
            }
            if opts.qrels is not None:
                labelled = LabelledQueries(
                    ids=qids, vectors=np.asarray(qvecs), relevant=load_qrels(opts.qrels)
                )
                checks["accuracy"] = compare_accuracy(
                    source, target, labelled, k=opts.k, max_drop=opts.thresholds.max_accuracy_drop
                )
    elif opts.qrels is not None or opts.query_file is not None:
        raise ConfigError(
            f"{target.uri.scheme}:// or {source.uri.scheme}:// cannot answer kNN queries"
        )
    else:
        checks["query_parity"] = {"passed": True, "skipped": "a side cannot answer kNN queries"}
    if opts.check_cmds:
        checks["integration"] = _integration(opts.check_cmds, target.uri.redacted())
    return ValidationResult(
        source=source.uri.redacted(),
        target=target.uri.redacted(),
        checks=checks,
        elapsed_s=time.perf_counter() - started,
        parity_samples=samples,
    )
