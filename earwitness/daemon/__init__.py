"""The streaming daemon: sources, windows, pipeline, event tracking and lifecycle."""
