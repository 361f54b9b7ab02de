"""`visiontl data preview`: what the training pipeline really feeds the model, as one picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from visiontl.backbones import create_backbone
from visiontl.config import Config
from visiontl.data.sampling import EpochSampler
from visiontl.tasks import get_task
from visiontl.visualize import class_color, draw_boxes, image_grid, save_png


def preview(cfg: Config, count: int, out_dir: Path, seed: int = 0) -> Path:
    """Draw `count` augmented training samples into out_dir/preview.png: detection boxes with their labels,
    segmentation masks blended in, classification labels as titles."""
    task = get_task(cfg)
    data = task.prepare_data(cfg)
    backbone = create_backbone(cfg.model.backbone, "none")  # only its normalisation is needed
    train_set, _ = task.datasets(cfg, data, backbone, augment=True)
    sampler = EpochSampler(len(train_set), shuffle=True, seed=seed)
    pictures, titles = [], []
    for index, aug_seed in list(sampler)[:count]:
        image, target, _ = train_set[(index, aug_seed)]
        if isinstance(target, dict):  # detection: [0, 1] image and its boxes
            array = (image.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
            names = [data.classes[int(k) - 1] for k in target["labels"]]
            pictures.append(draw_boxes(array, target["boxes"], names, color_keys=[int(k) - 1 for k in target["labels"]]))
            titles.append(f"{len(names)} boxes")
        else:  # classification / segmentation: a normalised tensor; undo the normalisation to look at it
            mean, std = np.array(backbone.mean), np.array(backbone.std)
            array = ((image.permute(1, 2, 0).numpy() * std + mean).clip(0, 1) * 255).astype(np.uint8)
            if target.ndim == 2:  # a class-id mask: blend its colours in, ignored pixels left as they are
                mask = target.numpy()
                colours = np.array([class_color(i) for i in range(len(data.classes))], dtype=np.uint8)
                known = mask < len(data.classes)
                array[known] = (0.5 * array[known] + 0.5 * colours[mask[known]]).astype(np.uint8)
                titles.append(", ".join(data.classes[i] for i in np.unique(mask[known])))
            else:
                titles.append(data.classes[int(target)])
            pictures.append(draw_boxes(array, [], []))
    return save_png(image_grid(pictures, titles=titles), Path(out_dir) / "preview.png")
