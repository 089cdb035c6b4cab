"""From a photo to ages: ``AgeEstimator.from_model(reference).predict(photo)`` -> ``[Face, ...]``;
the command line is ``python -m ab.nn.predict``."""
from ab.nn.dataset.decode import ImageTooLarge, ImageUnreadable
from ab.nn.predict.estimator import AgeEstimator, Face

__all__ = ["AgeEstimator", "Face", "ImageTooLarge", "ImageUnreadable"]
