"""``migration.yaml``: the plan model, validated with errors that name the YAML path and line.

Secrets never appear in a plan: connector URIs refuse passwords and secret options (they take
``password_env=VAR`` / ``password_file=PATH``), and the embedding key is named by ``key_env``.
"""

from __future__ import annotations

import itertools
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
STRATEGIES = ("big-bang", "blue-green", "parallel-run", "phased")


def parse_duration(value: Any) -> float:
    """Seconds from ``"7d"``, ``"36h"``, ``"30m"``, ``"5s"``, ``"2w"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a text like 7d, 36h, 30m, 5s")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration: use e.g. 7d, 36h, 30m, 5s or seconds")


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CopySettings(_Strict):
    batch_size: int = Field(default=5_000, ge=1)
    workers: int = Field(default=2, ge=1)
    max_rows_per_s: float | None = Field(
        default=None, gt=0, description="throttle writes to the target"
    )


class MappingSettings(_Strict):
    if_exists: Literal["reuse", "replace", "fail"] = "reuse"
    allow_loss: bool = Field(
        default=False, description="go on when the target cannot hold a feature"
    )


class EmbeddingSettings(_Strict):
    """Re-embed documents with a new model during the copy (see ``copy --embed``)."""

    model: str
    url: str | None = None
    key_env: str = "OPENAI_API_KEY"
    text_field: str = "document"
    vector_field: str | None = None
    max_cost: float | None = Field(default=None, ge=0)
    usd_per_mtok: float | None = Field(default=None, ge=0)


class ValidationSettings(_Strict):
    queries: int = Field(default=100, ge=0)
    k: int = Field(default=10, ge=1)
    min_recall: float = Field(default=0.95, ge=0, le=1)
    max_latency_ratio: float | None = Field(default=None, gt=0)
    check_cmds: list[str] = Field(default_factory=list)


class RollbackSettings(_Strict):
    """Rollback triggers (bounds the new side must keep) and the safety rules around them."""

    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    max_latency_ratio: float | None = Field(default=3.0, gt=0)
    min_parity: float | None = Field(default=0.9, ge=0, le=1)
    max_count_drift: float | None = Field(default=0.01, ge=0)
    window: Duration = 30.0
    min_samples: int = Field(default=20, ge=1)
    rehearse: Literal["required", "optional"] = "required"
    rehearsal_rows: int = Field(
        default=10_000, ge=0, description="rows of the scratch copy; 0: all"
    )
    scratch: str | None = Field(default=None, description="where the rehearsal's scratch copy goes")
    keep_old_for: Duration = 7 * 86400.0

    @field_validator("scratch")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        return None if v is None else _check_uri(v)


class RoutingSettings(_Strict):
    state: Path | None = Field(
        default=None, description="router state file (shared with applications)"
    )
    steps: list[float] = Field(default_factory=lambda: [1.0, 10.0, 50.0, 100.0])
    probe_queries: int = Field(default=100, ge=0)
    shadow_for: Duration = 0.0
    hold: Duration = 0.0

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one traffic step (percent of reads on the new side)")
        if any(not 0 < p <= 100 for p in v):
            raise ValueError("each traffic step is a percent within (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("traffic steps must increase")
        if v[-1] != 100:
            raise ValueError("the last traffic step must be 100 (all reads on the new side)")
        return v


class ScheduleSettings(_Strict):
    start: date | None = None
    review_days: float = Field(
        default=1.0, ge=0, description="days for the team to review the runbook"
    )


class MonitorSettings(_Strict):
    period: Duration = 14 * 86400.0
    interval: Duration = 3600.0
    queries: int = Field(default=50, ge=1)
    k: int = Field(default=10, ge=1)
    auto_rollback: bool = True


class EstimateInputs(_Strict):
    """Stated inputs of the estimate; anything left out is measured or taken from the source."""

    vectors: int | None = Field(default=None, ge=0)
    dim: int | None = Field(default=None, ge=1)
    metadata_bytes_per_vector: int = Field(default=256, ge=0)
    read_rate: float | None = Field(
        default=None, gt=0, description="vectors/s read from the source"
    )
    write_rate: float | None = Field(
        default=None, gt=0, description="vectors/s written to the target"
    )
    tokens_per_vector: float | None = Field(default=None, ge=0)
    usd_per_mtok: float | None = Field(default=None, ge=0)
    embed_rate: float | None = Field(
        default=None, gt=0, description="texts/s through the new model"
    )
    storage_usd_per_gb_month: float = Field(default=0.10, ge=0)
    new_instance_usd_per_hour: float = Field(default=0.0, ge=0)
    worker_usd_per_hour: float = Field(default=0.0, ge=0)
    index_overhead: float = Field(default=1.5, ge=1)
    overlap_days: float | None = Field(default=None, ge=0)


class BigBang(_Strict):
    kind: Literal["big-bang"]
    write_freeze: bool = False


class BlueGreen(_Strict):
    kind: Literal["blue-green"]
    alias: str | None = Field(default=None, description="alias (stable name) switched to green")
    sync: Literal["none", "logical", "trigger", "lance", "poll"] = "none"
    poll_field: str | None = Field(
        default=None, description="sync: poll -- the updated-at / version field to poll"
    )
    tombstone_field: str | None = Field(
        default=None, description="sync: poll -- a field whose true value marks a deleted row"
    )


class ParallelRun(_Strict):
    kind: Literal["parallel-run"]


Scalar = str | int | float | bool


class Segment(_Strict):
    """One batch of a phased migration: rows whose field has one of ``values``, ids in
    ``[from, to)``, or (``rest: true``) every row no other segment takes."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    values: list[Scalar] | None = None
    id_from: Scalar | None = Field(default=None, alias="from")
    id_to: Scalar | None = Field(default=None, alias="to")
    rest: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Segment:
        kinds = [self.values is not None, self.id_from is not None or self.id_to is not None]
        if sum(kinds) + self.rest != 1:
            raise ValueError("a segment has exactly one of: values, from/to, rest: true")
        return self


def _segment_items(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [
        {"name": str(v), "values": [v]} if isinstance(v, str | int | float | bool) else v
        for v in value
    ]


class Phased(_Strict):
    kind: Literal["phased"]
    segment_field: str = Field(description="a metadata field, or 'id' for id ranges")
    segments: Annotated[list[Segment], BeforeValidator(_segment_items)]

    @model_validator(mode="after")
    def _names(self) -> Phased:
        if not self.segments:
            raise ValueError("list at least one segment")
        names = [s.name for s in self.segments]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"segment names must be unique: {sorted(dup)}")
        if sum(s.rest for s in self.segments) > 1:
            raise ValueError("only one segment can be rest: true")
        ranged = any(s.id_from is not None or s.id_to is not None for s in self.segments)
        if ranged and self.segment_field != "id":
            raise ValueError("from/to segments need segment_field: id")
        return self


Strategy = Annotated[BigBang | BlueGreen | ParallelRun | Phased, Field(discriminator="kind")]


def _check_uri(text: str) -> str:
    try:
        ConnectorURI.parse(text)
    except ConfigError as exc:
        raise ValueError(exc.one_line()) from None
    return text


class Plan(_Strict):
    """A whole migration: what moves where, how, and what must hold at every step."""

    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    source: str
    target: str
    strategy: Strategy
    state_dir: Path | None = None
    copy_: CopySettings = Field(default_factory=CopySettings, alias="copy")
    mapping: MappingSettings = Field(default_factory=MappingSettings)
    embedding: EmbeddingSettings | None = None
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    rollback: RollbackSettings = Field(default_factory=RollbackSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    estimate: EstimateInputs = Field(default_factory=EstimateInputs)
    path: Path | None = Field(default=None, exclude=True, description="the file it was read from")

    @field_validator("source", "target")
    @classmethod
    def _uris(cls, v: str) -> str:
        return _check_uri(v)

    @model_validator(mode="after")
    def _sides_differ(self) -> Plan:
        if ConnectorURI.parse(self.source).redacted() == ConnectorURI.parse(self.target).redacted():
            raise ValueError("source and target are the same collection")
        return self

    @model_validator(mode="after")
    def _embedding_fits_strategy(self) -> Plan:
        if self.embedding is None:
            return self
        if isinstance(self.strategy, ParallelRun | Phased):
            raise ValueError(
                f"embedding: a {self.kind} plan dual-writes the applications' vectors to both "
                "sides, so the new side cannot hold another model's vectors; re-embed with "
                "big-bang or blue-green"
            )
        if isinstance(self.strategy, BlueGreen) and self.strategy.sync != "none":
            raise ValueError(
                "embedding: a blue-green plan with sync re-reads changed rows from the source "
                "without re-embedding them; use sync: none"
            )
        return self

    @property
    def kind(self) -> str:
        return self.strategy.kind

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    @property
    def state_path(self) -> Path:
        """The folder of this plan's state, ledgers, backups and reports."""
        if self.state_dir is None:
            return self.base_dir / ".vecmigrate" / "plans" / self.name
        return self.state_dir if self.state_dir.is_absolute() else self.base_dir / self.state_dir

    @property
    def router_state(self) -> Path:
        given = self.routing.state
        if given is None:
            return self.state_path / "router.sqlite"
        return given if given.is_absolute() else self.base_dir / given

    def fingerprint(self) -> dict[str, str]:
        """What may not change once a plan has started (its state would not fit)."""
        return {
            "name": self.name,
            "source": ConnectorURI.parse(self.source).redacted(),
            "target": ConnectorURI.parse(self.target).redacted(),
            "strategy": self.kind,
        }

    @classmethod
    def load(cls, path: Path) -> Plan:
        import yaml

        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read plan {path}: {exc.strerror or exc}") from exc
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a plan is a mapping (name:, source:, target:, ...)")
        return cls.parse_mapping(raw, where=str(path), text=text, path=path)

    @classmethod
    def parse_mapping(
        cls,
        raw: dict[str, Any],
        *,
        where: str = "plan",
        text: str | None = None,
        path: Path | None = None,
    ) -> Plan:
        try:
            plan = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(plan_errors(exc, where, text)) from None
        plan.path = path.resolve() if path is not None else None
        return plan


def _yaml_path(loc: tuple[Any, ...]) -> list[Any]:
    """The error location as YAML keys: drop the strategy tag pydantic puts in the path."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "strategy" and part in STRATEGIES:
            continue
        out.append(part)
    return out


def _dotted(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_of(text: str | None, parts: list[Any]) -> int | None:
    """The 1-based line of a key path in the YAML text (the nearest existing parent)."""
    if text is None:
        return None
    import yaml

    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            hit = next((kv for kv in node.value if kv[0].value == part), None)
            if hit is None:
                break
            line = hit[0].start_mark.line + 1
            node = hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def plan_errors(exc: ValidationError, where: str, text: str | None) -> str:
    """One line per problem: ``FILE line N, a.b[2].c: message``."""
    lines = []
    for err in exc.errors():
        parts = _yaml_path(tuple(err["loc"]))
        line = _line_of(text, parts)
        at = f" line {line}" if line else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (a typo?)"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown strategy kind: use one of {', '.join(STRATEGIES)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"say which strategy with kind: ({', '.join(STRATEGIES)})"
        lines.append(f"{where}{at}, {_dotted(parts)}: {msg}")
    return "invalid plan: " + "; ".join(lines)
