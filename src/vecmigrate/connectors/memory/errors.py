"""The memory connector raises vecmigrate errors directly; nothing to translate."""
