"""Scoring predictions: classification metrics here; COCO and segmentation metrics join later."""
