"""160x160, norm_160_bg with a fifth texture family, shapes (a gradient under random rectangles, ellipses
and lines), among the backgrounds of half the crops; not drawn by a default search. Evaluation: the same size,
no augmentation."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(160, "bgs", searched=False)
