"""Reproducible training recipes built on `medsam3_training` (`demo_brain`: the bundled demo model)."""
