"""VAP-Diffusion: text conditions, training, sampling (Sec. 2)."""
