"""earwitness: on-device acoustic event detection daemon."""

import os

# One window at a time on a shared box: numpy's OpenBLAS would otherwise start a thread per
# core for the frontend's and the anomaly model's small matrix products and keep them spinning
# between windows (twice the CPU for the same work). Only effective before numpy is imported,
# which importing earwitness first (the command line, the service) ensures.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

from earwitness.core.audio import SAMPLE_RATE

__all__ = ["SAMPLE_RATE", "__version__"]
