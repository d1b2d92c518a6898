"""Token counts with the model's tokenizer, the price table, and the spend cap."""

from __future__ import annotations

import fnmatch
import os
import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vecmigrate.embed.providers import EmbeddingProvider
from vecmigrate.errors import ConfigError, VecmigrateError

CHARS_PER_TOKEN = 4.0  # the usual rule of thumb for English text with BPE tokenizers


class BudgetExceeded(VecmigrateError):
    """The next embedding call would go over ``--max-cost``; what was paid for is kept."""

    exit_code = 4


@dataclass(frozen=True)
class ModelPrice:
    usd_per_mtok: float | None
    source: str
    dim: int | None = None
    max_tokens: int | None = None

    def cost(self, tokens: float) -> float | None:
        return None if self.usd_per_mtok is None else tokens * self.usd_per_mtok / 1e6


def _user_price_file(explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"--prices {explicit}: no such file")
        return explicit
    env = os.environ.get("VECMIGRATE_PRICES")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"$VECMIGRATE_PRICES={env}: no such file")
        return path
    home = Path("~/.config/vecmigrate/prices.toml").expanduser()
    return home if home.is_file() else None


def _load_table(text: str, where: str) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"price table {where}: {exc}") from exc
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"price table {where}: [models] must be a table")
    out: dict[str, dict[str, Any]] = {}
    for key, value in models.items():
        entry = value if isinstance(value, dict) else {"usd_per_mtok": value}
        if not isinstance(entry.get("usd_per_mtok", 0.0), int | float):
            raise ConfigError(f"price table {where}: {key}.usd_per_mtok must be a number")
        out[str(key)] = entry
    return out


def price_tables(explicit: Path | None = None) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """The user's table (if any) first, then the shipped one."""
    tables: list[tuple[str, dict[str, dict[str, Any]]]] = []
    user = _user_price_file(explicit)
    if user is not None:
        tables.append((str(user), _load_table(user.read_text(), str(user))))
    shipped = resources.files("vecmigrate.embed").joinpath("prices.toml").read_text()
    tables.append(("vecmigrate/embed/prices.toml", _load_table(shipped, "prices.toml")))
    return tables


def price_of(
    model_ref: str, *, prices: Path | None = None, override: float | None = None
) -> ModelPrice:
    """The price of a model (``kind:name``): an explicit override, then exact keys, then
    patterns, user table before the shipped one."""
    base = model_ref.split("?", 1)[0]
    if override is not None:
        return ModelPrice(override, "--price")
    tables = price_tables(prices)
    for exact in (True, False):
        for where, table in tables:
            for key, entry in table.items():
                hit = key == base if exact else ("*" in key and fnmatch.fnmatchcase(base, key))
                if hit:
                    usd = entry.get("usd_per_mtok")
                    return ModelPrice(
                        None if usd is None else float(usd),
                        f"{where} [{key}]",
                        dim=entry.get("dim"),
                        max_tokens=entry.get("max_tokens"),
                    )
    return ModelPrice(None, "unknown (pass --price or add it to a price table)")


@dataclass(frozen=True)
class TokenCounts:
    counts: np.ndarray  # tokens per text
    method: str  # what counted them


def _tiktoken_counts(model: str, texts: Sequence[str]) -> np.ndarray | None:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        enc = tiktoken.encoding_for_model(model)
    except (KeyError, ValueError, OSError):
        try:
            enc = tiktoken.get_encoding("cl100k_base")
        except (ValueError, OSError):
            return None
    except Exception:  # tiktoken fetches encodings over the network when they are not cached
        return None
    return np.fromiter((len(x) for x in enc.encode_batch(list(texts))), np.int64, len(texts))


def count_tokens(provider: EmbeddingProvider, texts: Sequence[str]) -> TokenCounts:
    """Tokens per text with the model's own tokenizer; tiktoken for OpenAI models when it
    and its encoding are available offline; else about 4 characters per token."""
    own = provider.count_tokens(texts)
    if own is not None:
        return TokenCounts(np.asarray(own, dtype=np.int64), f"{provider.ref.kind} tokenizer")
    if provider.ref.kind == "openai":
        counted = _tiktoken_counts(provider.ref.name, texts)
        if counted is not None:
            return TokenCounts(counted, "tiktoken")
    approx = np.fromiter(
        (max(1, round(len(t) / CHARS_PER_TOKEN)) for t in texts), np.int64, len(texts)
    )
    return TokenCounts(approx, f"approximate ({CHARS_PER_TOKEN:g} characters per token)")


class Budget:
    """Spend so far (all runs of a job) against an optional cap; shared by worker threads."""

    def __init__(self, price: ModelPrice, cap: float | None, spent: float = 0.0) -> None:
        if cap is not None and cap > 0 and price.usd_per_mtok is None:
            raise ConfigError(
                "--max-cost needs the model's price: pass --price USD_PER_MILLION_TOKENS or add "
                "it to a price table (--prices)"
            )
        self.price = price
        self.cap = cap
        self.spent = spent
        self._reserved = 0.0
        self._lock = threading.Lock()

    def cost(self, tokens: float) -> float:
        return self.price.cost(tokens) or 0.0

    def reserve(self, tokens: float) -> float:
        """Book the estimated cost of a call before making it; refuse past the cap."""
        amount = self.cost(tokens)
        with self._lock:
            if self.cap is not None and self.spent + self._reserved + amount > self.cap + 1e-12:
                raise BudgetExceeded(
                    f"--max-cost {self.cap:g} USD reached: {self.spent:.6f} USD spent; the next "
                    f"call would cost about {amount:.6f} USD. Embedded texts are cached: raise "
                    "the cap and run the same command again to resume"
                )
            self._reserved += amount
        return amount

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self._reserved -= reserved
            self.spent += actual

    def observe(self, spent: float) -> None:
        """Take the job's total spend as recorded (other processes spend from it too)."""
        with self._lock:
            self.spent = spent
