"""Dataset folders -> (image, mask, text) triplets: sources, label dictionaries, split, batches.

`dataset.py` (batching) imports torch; `sources`, `labels`, `mricron` and `split` need only
numpy and the runtime, so evaluation of an export works without torch.
"""
