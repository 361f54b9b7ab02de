"""Task models built from (Backbone, number of classes, options)."""

from visiontl.models.classifier import Classifier, build_classifier

__all__ = ["Classifier", "build_classifier"]
