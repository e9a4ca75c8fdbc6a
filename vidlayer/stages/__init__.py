"""Pipeline stages, one module per backend. Importing this package registers every backend."""

from vidlayer.clip import Drop
from vidlayer.stages.base import Resources, Stage, register, registered, stage_class
from vidlayer.stages import (  # noqa: E402,F401  (registration)
    caption, caption_vlm, decode, filter, foreground, ground, inpaint, inpaint_vace, matte, qc_vlm, quality,
    segment, segment_sam2, window, write,
)

__all__ = ["Drop", "Resources", "Stage", "register", "registered", "stage_class"]
