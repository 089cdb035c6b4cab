"""From a photo to ages: ``AgeEstimator.from_model(reference).predict(photo)`` -> ``[Face, ...]``;
the command line is ``python -m ab.nn.predict``."""
from ab.nn.predict.estimator import AgeEstimator, Face, ImageUnreadable

__all__ = ["AgeEstimator", "Face", "ImageUnreadable"]
