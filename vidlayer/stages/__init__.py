"""Pipeline stages, one module each. Importing this package registers every backend."""

from vidlayer.clip import Drop
from vidlayer.stages.base import Resources, Stage, register, registered, stage_class

__all__ = ["Drop", "Resources", "Stage", "register", "registered", "stage_class"]
