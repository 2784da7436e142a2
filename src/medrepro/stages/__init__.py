"""One thin CLI module per workflow step (``python -m medrepro.stages.<step>``)."""
