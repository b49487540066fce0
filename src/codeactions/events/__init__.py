"""Live events: what happens to runs and codes, published by the process where it happens and
delivered to every replica's listeners (in process, or through Redis pub/sub)."""
