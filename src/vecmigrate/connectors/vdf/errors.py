"""File and Arrow errors of a VDF folder: the same mapping as the dataset connector."""

from vecmigrate.connectors.dataset.errors import mapped, translate

__all__ = ["mapped", "translate"]
