"""Re-embedding: providers, a cache keyed by model and text, cost, quality and adapters."""

from vecmigrate.embed.providers import EmbeddingProvider, ModelRef, open_provider

__all__ = ["EmbeddingProvider", "ModelRef", "open_provider"]
