"""Validation: completeness, metadata, query parity, latency; a verdict and a report."""
