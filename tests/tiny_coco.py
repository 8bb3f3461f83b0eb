"""A tiny COCO-format detection set made on the spot, for the tests (test
only: users bring their own COCO data).

Each image is noise with a few filled rectangles of two colours; the
boxes are the rectangles, the categories their colours. The layout is the
COCO one that MMDetection's ``CocoDataset`` and ``CocoMetric`` read::

    root/images/000000.png ...
    root/annotations.json
"""
import json
import os
import os.path as osp
from typing import Optional, Tuple

import numpy as np

from make_digits import clear_generated  # tools/

CLASSES = ('red', 'blue')
_COLOURS = ((220, 30, 30), (30, 30, 220))


def make_tiny_coco(root: str,
                   num_images: int = 8,
                   image_size: Tuple[int, int] = (64, 64),
                   max_objects: int = 3,
                   seed: int = 0,
                   vary_size: bool = False) -> str:
    """Write the set under ``root`` and return the annotation file's path.

    A set written there before is replaced whole (with a warning); an
    ``images`` folder holding other files is an error.

    Args:
        root (str): Output folder.
        num_images (int): Number of images.
        image_size (tuple): (height, width).
        max_objects (int): At most this many boxes per image (at least 1).
        seed (int): Seed of the content.
        vary_size (bool): Give each image its own height and width, each
            drawn from [0.5, 1.5] times ``image_size`` (other sizes and
            aspect ratios, as in real COCO batches). Defaults to False.
    """
    from PIL import Image
    rng = np.random.RandomState(seed)
    # Old images of another call would stay beside the new ones.
    clear_generated(root, ('images', ), r'\d{6}\.png', 'make_tiny_coco')
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        h, w = image_size
        if vary_size:
            h, w = (int(rng.randint(s // 2, s * 3 // 2 + 1))
                    for s in image_size)
        img = rng.randint(0, 60, size=(h, w, 3)).astype(np.uint8)
        for _ in range(rng.randint(1, max_objects + 1)):
            bw, bh = rng.randint(w // 6, w // 2), rng.randint(h // 6, h // 2)
            x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
            cat = int(rng.randint(len(CLASSES)))
            img[y:y + bh, x:x + bw] = _COLOURS[cat]
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=cat + 1,
                    bbox=[float(x), float(y),
                          float(bw), float(bh)],
                    area=float(bw * bh),
                    iscrowd=0))
        name = f'{i:06d}.png'
        Image.fromarray(img).save(osp.join(root, 'images', name))
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)]
    ann_file = osp.join(root, 'annotations.json')
    with open(ann_file, 'w') as f:
        json.dump(
            dict(images=images, annotations=annotations,
                 categories=categories), f)
    return ann_file


def tiny_detector_config(cfg,
                         data_root: str,
                         ann_file: str,
                         work_dir: str,
                         size: int = 64,
                         queries: int = 20,
                         n_train: int = 4,
                         epochs: int = 1,
                         stock_pipeline: bool = False,
                         pipeline_scale: float = 1.0,
                         experiment_name: Optional[str] = None):
    """A stock DETR-family config shrunk to the tiny COCO set, CPU-sized:
    ResNet-18 without pretrained weights, few queries, batch 2.

    Args:
        cfg (Config): The stock config (changed in place and returned).
        data_root, ann_file: From :func:`make_tiny_coco`.
        work_dir (str): The run's work directory.
        size (int): Images are resized to ``size`` pixels (keeping their
            aspect ratio) unless ``stock_pipeline``.
        queries (int): Object queries.
        n_train (int): Training images (the first ``n_train``).
        epochs (int): Training epochs.
        stock_pipeline (bool): Keep the config's own train pipeline
            (multi-scale resizing and cropping: the images of a batch
            differ in size, as on COCO) instead of one fixed size.
        pipeline_scale (float): Multiply the stock pipeline's resize
            scales and crop sizes by this (e.g. 0.1: COCO's 480-800 short
            sides become 48-80 pixels, CPU-sized; its structure stays).
        experiment_name (str, optional): mmengine's experiment name
            (default: a fresh one, so runs in one process do not share
            their logger).
    """
    import copy
    import json
    import uuid
    with open(ann_file) as f:
        classes = tuple(c['name'] for c in json.load(f)['categories'])
    model = cfg.model
    model.backbone.update(depth=18, init_cfg=None)
    model.neck.in_channels = [
        64 * 2**i for i in model.backbone.out_indices
    ]
    model.num_queries = queries
    if model.get('test_cfg'):
        model.test_cfg.max_per_img = min(
            model.test_cfg.get('max_per_img', queries), queries)
    model.bbox_head.num_classes = len(classes)
    if model.get('dn_cfg'):
        model.dn_cfg.group_cfg = dict(dynamic=False, num_groups=2)
    fixed = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(size, size), keep_ratio=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]
    for name, n in (('train_dataloader', n_train), ('val_dataloader',
                                                    None)):
        loader = cfg[name]
        pipeline = _scaled(loader.dataset.pipeline, pipeline_scale) if (
            stock_pipeline and name == 'train_dataloader') else fixed
        loader.batch_size = 2
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.pop('batch_sampler', None)
        loader.dataset = dict(
            type='CocoDataset',
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=dict(img='images/'),
            metainfo=dict(classes=classes),
            filter_cfg=dict(filter_empty_gt=False),
            indices=n,
            test_mode=name != 'train_dataloader',
            pipeline=copy.deepcopy(pipeline))
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(type='CocoMetric', ann_file=ann_file,
                             metric='bbox')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs,
                         val_interval=1)
    cfg.param_scheduler = []
    cfg.work_dir = work_dir
    cfg.experiment_name = experiment_name or \
        f'{osp.basename(work_dir)}_{uuid.uuid4().hex[:8]}'
    if cfg.get('visualizer'):
        # MMDetection names its visualizer 'visualizer': a second run in
        # one process would write its scalars into the first run's folder.
        cfg.visualizer.name = cfg.experiment_name
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.log_level = 'WARNING'
    cfg.pop('auto_scale_lr', None)
    return cfg


def _scaled(pipeline, factor: float):
    """A copy of ``pipeline`` with every resize scale and crop size
    multiplied by ``factor``."""
    def size(v):
        if isinstance(v, (list, tuple)):
            return type(v)(size(x) for x in v)
        return max(1, int(round(v * factor))) if isinstance(v, int) else v

    def walk(node):
        if isinstance(node, dict):
            return {k: size(v) if k in ('scale', 'scales', 'crop_size')
                    else walk(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(x) for x in node)
        return node

    return walk(pipeline)
