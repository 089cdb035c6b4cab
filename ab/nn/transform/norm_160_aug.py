"""160x160, flip + colour jitter + small affine; evaluation uses the same size without augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(160, "aug")
