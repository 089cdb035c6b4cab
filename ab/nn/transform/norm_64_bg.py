"""64x64, norm_64_aug plus background replacement in half the crops (a face blended into random textures
through soft or elliptical masks); not drawn by a default search. Evaluation: the same size, no augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(64, "bg", searched=False)
