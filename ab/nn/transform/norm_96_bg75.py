"""96x96, norm_96_aug plus background replacement in three quarters of the crops (norm_96_bg
replaces half); not drawn by a default search. Evaluation: the same size, no augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(96, "bg75", searched=False)
