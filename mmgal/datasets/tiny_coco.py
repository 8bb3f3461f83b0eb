"""A tiny COCO-format detection set made on the spot (tests, benchmarks).

Each image is noise with a few filled rectangles of two colours; the
boxes are the rectangles, the categories their colours. The layout is the
COCO one that MMDetection's ``CocoDataset`` and ``CocoMetric`` read::

    root/images/000000.png ...
    root/annotations.json
"""
import json
import os
import os.path as osp
from typing import Tuple

import numpy as np

from .generated import clear_generated

CLASSES = ('red', 'blue')
_COLOURS = ((220, 30, 30), (30, 30, 220))


def make_tiny_coco(root: str,
                   num_images: int = 8,
                   image_size: Tuple[int, int] = (64, 64),
                   max_objects: int = 3,
                   seed: int = 0) -> str:
    """Write the set under ``root`` and return the annotation file's path.

    A set written there before is replaced whole (with a warning); an
    ``images`` folder holding other files is an error.

    Args:
        root (str): Output folder.
        num_images (int): Number of images.
        image_size (tuple): (height, width).
        max_objects (int): At most this many boxes per image (at least 1).
        seed (int): Seed of the content.
    """
    from PIL import Image
    rng = np.random.RandomState(seed)
    h, w = image_size
    # Old images of another call would stay beside the new ones.
    clear_generated(root, ('images', ), r'\d{6}\.png', 'make_tiny_coco')
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
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
