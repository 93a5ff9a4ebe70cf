"""Named stand-ins for libraries that cannot be installed on CI machines (TensorRT, CUDA).

They exist only so the code that calls those libraries runs in CI; they are not the
libraries. Every test using them has a real-library twin that skips with its reason.
"""
