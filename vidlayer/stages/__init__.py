"""Pipeline stages, one module each. Importing this package registers every backend."""

from vidlayer.clip import Drop
from vidlayer.stages.base import Resources, Stage, register, registered, stage_class
from vidlayer.stages import caption, decode, filter, foreground, inpaint, matte, quality, segment, window, write  # noqa: E402,F401  (registration)

__all__ = ["Drop", "Resources", "Stage", "register", "registered", "stage_class"]
