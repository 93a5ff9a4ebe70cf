"""`python -m medsam3_training train|eval ...`, the same commands as `medsam3-rt train|eval`.

This is the module torchrun launches: `torchrun --nproc-per-node 4 -m medsam3_training train --config train.yaml`.
"""

from medsam3_rt.cli.main import run

if __name__ == "__main__":
    run()
