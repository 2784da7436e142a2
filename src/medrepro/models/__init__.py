"""Image towers, PEFT adapters, the EI network, fusion baselines and downstream classifiers."""
