"""224x224, no augmentation; evaluation uses the same size without augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(224, "none")
