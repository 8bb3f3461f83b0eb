#!/usr/bin/env python
"""Write scikit-learn's bundled digits as an image-folder dataset for
MMPretrain (the quick start's data)::

    python tools/make_digits.py data/digits

The layout is MMPretrain's ``CustomDataset`` one::

    root/train/<label>/<index>.png
    root/val/<label>/<index>.png

so the stock pipeline (``LoadImageFromFile`` ...) reads it like any other
image dataset. Deterministic: the same seed gives the same split and files.
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import warnings
from typing import Dict, Sequence

import numpy as np


def clear_generated(root: str, folders: Sequence[str], pattern: str,
                    maker: str) -> bool:
    """Remove ``root/<folder>`` for each of ``folders`` when every file in
    them matches ``pattern`` (a regex over the path relative to
    ``root/<folder>``, '/'-separated), i.e. when ``maker`` wrote them.

    Returns whether something was removed (the caller then writes the
    dataset afresh, so old files never stay beside new ones). Raises
    ``FileExistsError`` naming the first foreign file: a folder that holds
    anything else is not deleted.
    """
    regex = re.compile(pattern)
    present = [osp.join(root, f) for f in folders
               if osp.exists(osp.join(root, f))]
    for top in present:
        for dirpath, _, files in os.walk(top):
            for name in files:
                rel = osp.relpath(osp.join(dirpath, name), top).replace(
                    os.sep, '/')
                if not regex.fullmatch(rel):
                    raise FileExistsError(
                        f'{osp.join(top, rel)} was not written by {maker}; '
                        f'{maker} replaces only its own files. Choose an '
                        f'empty folder instead of {root!r}.')
    for top in present:
        shutil.rmtree(top)
    if present:
        warnings.warn(f'{maker}: replaced the dataset in {root} (the old '
                      f'files under {", ".join(folders)} were removed)',
                      stacklevel=3)
    return bool(present)


_DONE = 'mmgal_digits.json'


def make_digits_images(root: str,
                       val_fraction: float = 0.2,
                       seed: int = 0,
                       upscale: int = 1) -> Dict[str, int]:
    """Write the 1,797 8x8 digits as PNGs under ``root`` (idempotent).

    ``root`` then holds exactly the split it reports: a split written
    earlier with other settings is removed first (with a warning), and a
    ``train``/``val`` folder holding files this function did not write is
    an error rather than mixed in.

    Args:
        root (str): Output folder.
        val_fraction (float): Stratified share of the validation split.
        seed (int): Seed of the split.
        upscale (int): Nearest-neighbour upscaling factor of the stored
            images (the pipeline can resize as well).

    Returns:
        dict: Number of images per split.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    settings = dict(val_fraction=val_fraction, seed=seed, upscale=upscale)
    done = osp.join(root, _DONE)
    if osp.isfile(done):
        with open(done) as f:
            info = json.load(f)
        if info.get('settings') == settings:
            return info['counts']
        os.remove(done)  # an interrupted rewrite must not look finished
    # Another split (or an interrupted write) was there: remove it, so no
    # image stays in both splits.
    clear_generated(root, ('train', 'val'), r'\d+/\d{4}\.png',
                    'make_digits_images')
    images, labels = load_digits(return_X_y=True)
    images = (images.reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(
        np.uint8)
    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        idx, test_size=val_fraction, random_state=seed, stratify=labels)
    counts = {}
    for split, split_idx in (('train', train_idx), ('val', val_idx)):
        for i in sorted(split_idx):
            folder = osp.join(root, split, str(int(labels[i])))
            os.makedirs(folder, exist_ok=True)
            img = Image.fromarray(images[i], mode='L')
            if upscale > 1:
                img = img.resize((8 * upscale, 8 * upscale), Image.NEAREST)
            img.save(osp.join(folder, f'{i:04d}.png'))
        counts[split] = int(len(split_idx))
    with open(done, 'w') as f:
        json.dump(dict(settings=settings, counts=counts), f)
    return counts


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('root', nargs='?', default='data/digits')
    p.add_argument('--val-fraction', type=float, default=0.2)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()
    counts = make_digits_images(args.root, args.val_fraction, args.seed)
    print(f'digits written to {args.root}: {counts}')
