"""Scoring predictions: classification metrics, COCO detection and mask metrics."""
