"""Task models built from (Backbone, number of classes, options); `build_model` builds any of them from names."""

from visiontl.models.build import build_model, build_network
from visiontl.models.classifier import Classifier, build_classifier

__all__ = ["Classifier", "build_classifier", "build_model", "build_network"]
