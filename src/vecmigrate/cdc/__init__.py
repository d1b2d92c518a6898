"""Change data capture: snapshot, stream the changes made during and after it, catch up."""
