"""Deployment: a checkpoint as an ONNX or TorchScript file that runs without visiontl, checked against the
PyTorch model before it is written, and such a file used by `visiontl predict` (docs/deploy.md).

- graphs.py: the input contract (pixels in [0, 1], normalisation inside) and each task's outputs;
- formats.py: graph -> ONNX / TorchScript bytes, metadata into them;
- runtime.py: running a file with onnxruntime / torch.jit;
- parity.py: the check images and the per-task comparison;
- metadata.py: what a file says about itself;
- exporter.py: `visiontl export` end to end;
- predict.py: an exported file as a Predictor (visiontl.predictor), as `visiontl predict` and `vtl.load` use it.
"""

from visiontl.export.exporter import ExportResult, export_checkpoint
from visiontl.export.runtime import is_exported_file, open_exported

__all__ = ["ExportResult", "export_checkpoint", "is_exported_file", "open_exported"]
