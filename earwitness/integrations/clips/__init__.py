"""Event audio: the recorder (a pipeline stage keeping each event's clip) and the FLAC writer."""

from earwitness.integrations.clips.recorder import ClipRecorder
from earwitness.integrations.clips.writer import ClipWriter, prune_clips, write_clip

__all__ = ["ClipRecorder", "ClipWriter", "prune_clips", "write_clip"]
