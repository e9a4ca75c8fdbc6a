"""LayerT2V: the serialized-layer video DiT, installed as `layert2v`."""
