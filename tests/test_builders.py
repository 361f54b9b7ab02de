"""Model builders: keyword-only options whose defaults are ModelConfig's, and `build_model` for every task."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from visiontl.backbones import create_backbone
from visiontl.config import ModelConfig
from visiontl.errors import ConfigError
from visiontl.models import Classifier, build_classifier, build_model
from visiontl.models.build import arch_options
from visiontl.models.detection import build_faster_rcnn, build_ssd
from visiontl.models.segmentation import SegmentationModel

BUILDERS = [build_classifier, Classifier, build_faster_rcnn, build_ssd, SegmentationModel]
TINY = "timm:test_resnet"  # a few thousand parameters, every stride to 32


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_options_are_keyword_only_with_modelconfig_defaults(builder) -> None:
    params = list(inspect.signature(builder).parameters.values())
    assert [p.name for p in params[:2]] == ["backbone", "num_classes"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:]) and len(params) > 2
    defaults = ModelConfig()
    for p in params[2:]:
        if p.name in ModelConfig.model_fields and p.name != "arch":
            expected = getattr(defaults, p.name)
            assert p.default == (tuple(expected) if isinstance(expected, list) else expected), p.name


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_a_positional_option_is_a_type_error(builder) -> None:
    backbone = create_backbone(TINY, "none")
    with pytest.raises(TypeError, match="positional"):
        builder(backbone, 3, "linear")
    with pytest.raises(TypeError):
        build_model("classifier", TINY, 3)


def test_a_faster_rcnn_built_without_options_has_the_config_defaults() -> None:
    model = build_faster_rcnn(create_backbone(TINY, "none"), 3)
    m = ModelConfig()
    assert model.transform.min_size == (m.min_size,) and model.transform.max_size == m.max_size == 1333
    assert model.roi_heads.score_thresh == m.score_threshold
    assert model.roi_heads.nms_thresh == m.nms_threshold
    assert model.roi_heads.detections_per_img == m.detections_per_image
    assert model.backbone.out_channels == m.fpn_channels
    assert len(model.backbone.taps) == m.feature_levels
    assert all(list(r) == m.aspect_ratios for r in model.rpn.anchor_generator.aspect_ratios)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # background added


def test_build_model_options_reach_the_network_and_keep_the_rest_at_the_defaults() -> None:
    model = build_model("ssdlite", backbone=TINY, num_classes=2, weights="none", ssd_size=96, detections_per_image=7)
    assert model.transform.fixed_size == (96, 96)
    assert model.detections_per_img == 7 and model.nms_thresh == ModelConfig().nms_threshold
    assert arch_options("ssdlite") == ["ssd_size", "ssd_scale_range", "score_threshold", "nms_threshold",
                                       "detections_per_image"]
    assert arch_options("unet") == ["decoder_channels"]


def _check(model: torch.nn.Module) -> None:
    assert isinstance(model, torch.nn.Module) and model.training
    model.eval()


def test_build_model_classifier() -> None:
    torch.manual_seed(0)
    model = build_model("classifier", backbone=TINY, num_classes=3, weights="none", head="mlp", mlp_hidden=16)
    _check(model)
    assert model.head[0].out_features == 16
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 48)).shape == (2, 3)


@pytest.mark.parametrize("arch", ["faster_rcnn", "mask_rcnn", "ssd"])
def test_build_model_detectors(arch: str) -> None:
    torch.manual_seed(0)
    sizes = {"ssd_size": 96} if arch == "ssd" else {"min_size": 64, "max_size": 96}
    model = build_model(arch, backbone=TINY, num_classes=3, weights="none", score_threshold=0.0, **sizes)
    assert model.training
    target = {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])}
    if arch == "mask_rcnn":
        target["masks"] = torch.zeros(1, 72, 88, dtype=torch.uint8)
        target["masks"][0, 10:50, 8:40] = 1
    losses = model([torch.rand(3, 72, 88), torch.rand(3, 72, 88)], [target, target])  # SSD's batch norms need two
    assert all(torch.isfinite(v) for v in losses.values())
    _check(model)
    with torch.no_grad():
        (out,) = model([torch.rand(3, 72, 88)])
    n = len(out["boxes"])
    assert n > 0 and out["boxes"].shape == (n, 4) and out["scores"].shape == (n,)
    assert 1 <= int(out["labels"].min()) and int(out["labels"].max()) <= 3
    if arch == "mask_rcnn":
        assert out["masks"].shape == (n, 1, 72, 88)


def test_build_model_segmenter() -> None:
    torch.manual_seed(0)
    model = build_model("fpn", backbone=TINY, num_classes=4, weights="none")
    _check(model)
    assert model.arch == "fpn"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 70, 90)).shape == (1, 4, 70, 90)
    unet = build_model("unet", backbone=TINY, num_classes=2, weights="none", decoder_channels=[32, 16, 8, 8, 4])
    assert unet.head[0].in_channels == 4


def test_build_model_reads_backbone_weights_from_a_path(tmp_path: Path) -> None:
    source = Classifier(create_backbone(TINY, "none"), 3)
    torch.save({"model": source.state_dict(), "config": {}, "backbone_prefix": "backbone.body."}, tmp_path / "c.pt")
    model = build_model("classifier", backbone=TINY, num_classes=2, weights=tmp_path / "c.pt")
    assert len(source.backbone.state_dict()) > 10
    for (k, v), (k2, v2) in zip(source.backbone.state_dict().items(), model.backbone.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.parametrize(("arch", "options", "message"), [
    ("faster_rcnn", {"min_sise": 64}, "build_model: unknown key 'model.min_sise' (did you mean 'model.min_size'?); "
                                      "valid keys here: "),
    ("faster_rcnn", {"min_size": -1}, "build_model: model.min_size: Input should be greater than 0 (got -1)"),
    ("ssd", {"neck": "fpn"}, "build_model: model.neck does not shape arch 'ssd'; its options: ssd_size, "),
    ("classifier", {"loss": "dice"}, "build_model: model.loss does not shape arch 'classifier'; its options: head, "),
    ("unet", {"head": "mlp"}, "build_model: model.head 'mlp' is a classification head; task 'segmentation' uses"),
    ("yolo", {}, "build_model: unknown arch 'yolo'; choose one of classifier, faster_rcnn, "),
    ("classifier", {"backbone": "resnet5"}, "unknown backbone 'resnet5' (did you mean 'resnet50'?)"),
    ("faster_rcnn", {"anchor_sizes": [[32]]}, "build_model: model.anchor_sizes: the detector has 4 feature maps"),
    ("classifier", {"num_classes": 0}, "build_model: num_classes must be a positive integer, got 0"),
])
def test_a_bad_option_is_one_line_naming_it(arch: str, options: dict, message: str) -> None:
    kwargs = {"backbone": TINY, "num_classes": 3, "weights": "none", **options}
    with pytest.raises(ConfigError) as info:
        build_model(arch, **kwargs)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
