"""EI (early intervention): the unimodal PEFT runs its towers start from, its multimodal training and probes."""
