"""Reading and writing what a build touches: videos, inputs, shards and the manifest."""
