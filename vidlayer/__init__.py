"""VidLayer: build layered video datasets (full, background, foreground + alpha) from raw clips."""

__version__ = "0.1.0"
