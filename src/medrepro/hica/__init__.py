"""HiCA (arXiv 2501.09294): hierarchical contrastive vision-language fine-tuning for few-shot classification."""
