"""The copy engine: plan, stream, checkpoint, resume."""
