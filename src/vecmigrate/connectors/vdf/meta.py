"""``VDF_META.json`` as vdf-io writes it (its ``VDFMeta`` / ``NamespaceMeta`` models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vecmigrate.errors import DataError, NotFoundError

META_FILE = "VDF_META.json"
NOT_PROVIDED = "NOT_PROVIDED"


class NamespaceMeta(BaseModel):
    """One exported namespace of an index: where its Parquet files are and what they hold."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    namespace: str = ""
    index_name: str | None = None
    total_vector_count: int | None = None
    exported_vector_count: int | None = None
    dimensions: int | None = None
    model_name: str | None = None
    model_map: dict[str, Any] | None = None
    vector_columns: list[str] = Field(default_factory=lambda: ["vector"])
    data_path: str
    metric: str | None = None
    index_config: dict[str, Any] | None = None

    def model_of(self, column: str) -> str | None:
        entry = (self.model_map or {}).get(column)
        name = entry.get("model_name") if isinstance(entry, dict) else None
        name = name or self.model_name
        return None if name in (None, "", NOT_PROVIDED) else str(name)

    def dim_of(self, column: str) -> int | None:
        entry = (self.model_map or {}).get(column)
        dims = entry.get("dimensions") if isinstance(entry, dict) else None
        value = dims or self.dimensions
        return int(value) if isinstance(value, int) and value > 0 else None


class VdfMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str | None = None
    file_structure: list[str] = Field(default_factory=list)
    author: str | None = None
    exported_from: str | None = None
    indexes: dict[str, list[NamespaceMeta]]
    exported_at: str | None = None
    id_column: str | None = None

    @field_validator("indexes", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, dict) else v for k, v in value.items()}
        return value


def read_meta(folder: Path) -> VdfMeta:
    path = folder / META_FILE
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise NotFoundError(f"no VDF dataset at {folder}: {META_FILE} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON: {exc}", file=str(path)) from exc
    try:
        return VdfMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DataError(f"{where}: {first['msg']}", file=str(path)) from exc
