"""visiontl: transfer learning for computer vision.

Pretrained classification backbones plug into task heads and are fine-tuned with explicit policies
(feature extraction, partial, full, staged) by one trainer. Start with `visiontl --help`.
"""

__version__ = "0.1.0"
