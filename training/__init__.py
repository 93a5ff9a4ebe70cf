"""medsam3_training: the Medical SAM3 fine-tuning recipe (needs the `train` extra)."""
