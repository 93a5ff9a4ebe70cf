"""`torch.nn.Module` wrappers that cut a transformers SAM3 model into exportable graphs.

Each wrapper calls the original transformers modules with the original weights; where the
exporter needs a change (static spatial sizes for the DETR box bias, position encodings as
constants) it is applied around the original code, never by copying it. Tests compare
every wrapper with the unmodified transformers forward.
"""
