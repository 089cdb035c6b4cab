"""160x160, no augmentation; evaluation uses the same size without augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(160, "none")
