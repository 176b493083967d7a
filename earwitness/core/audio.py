"""The one sample format every stage after the source works in."""

SAMPLE_RATE = 16_000
"""Every stage after the source works on 16 kHz mono float32 audio in [-1, 1]."""
