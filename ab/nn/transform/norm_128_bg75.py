"""128x128, norm_128_aug plus background replacement in three quarters of the crops (norm_128_bg
replaces half); not drawn by a default search. Evaluation: the same size, no augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(128, "bg75", searched=False)
