"""64x64, random horizontal flip; evaluation uses the same size without augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(64, "flip")
