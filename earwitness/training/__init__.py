"""Training, calibration, export and evaluation of the classifier (needs the `train` extra)."""
