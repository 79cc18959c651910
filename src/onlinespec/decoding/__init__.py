"""KV caches, verification, the speculative loop and plain autoregressive decoding. Knows nothing of learning."""
