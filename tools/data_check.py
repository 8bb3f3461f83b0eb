"""Checks of an image-folder dataset before training starts.

MMPretrain's ``CustomDataset`` (folder layout, no annotation file) counts
a class folder without images as a class, so the labels of the folders
after it run past the head's ``num_classes`` and training fails mid-epoch
with ``IndexError: Target 10 is out of bounds``; a zero-byte image fails
in OpenCV as ``!buf.empty()`` without naming the file. Both are found here
from file names and sizes alone (no image is decoded).
"""
import os
import os.path as osp
import warnings
from typing import List, Optional

# MMPretrain's CustomDataset default extensions.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


def _folder_of(dataset: dict):
    prefix = dataset.get('data_prefix', '')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', '')
    root = dataset.get('data_root', '') or ''
    return osp.join(root, prefix) if prefix else root


def check_image_folder(folder: str, field: str) -> Optional[int]:
    """``ValueError`` naming ``field`` and the files when a class folder of
    ``folder`` holds no image or an image file is empty; else the number of
    class folders (None where ``folder`` is not a folder)."""
    if not osp.isdir(folder):
        return None  # mmpretrain names a missing folder itself
    classes = sorted(d for d in os.listdir(folder)
                     if osp.isdir(osp.join(folder, d)))
    empty: List[str] = []
    zero: List[str] = []
    for name in classes:
        count = 0
        for dirpath, _, files in os.walk(osp.join(folder, name)):
            for f in files:
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    count += 1
                    path = osp.join(dirpath, f)
                    if osp.getsize(path) == 0:
                        zero.append(path)
        if count == 0:
            empty.append(osp.join(folder, name))
    if empty:
        raise ValueError(
            f'{field}: {len(empty)} class folder(s) hold no image: '
            f'{", ".join(empty[:5])}. MMPretrain\'s CustomDataset still '
            f'counts each as a class ({len(classes)} classes here), so the '
            'labels of the folders after it shift; remove the folder or add '
            'its images')
    if zero:
        raise ValueError(
            f'{field}: {len(zero)} empty (0-byte) image file(s): '
            f'{", ".join(zero[:5])}' + (' ...' if len(zero) > 5 else '') +
            '; remove or replace them')
    return len(classes)


def check_class_count(found: int, num_classes, field: str,
                      folder: str) -> None:
    """The folder's classes against the head's ``num_classes``: more is an
    error (labels past the head's outputs), fewer a warning (a head of 10
    classes trained on one folder learns to answer one class: 100 %)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        return
    if found > num_classes:
        raise ValueError(
            f'{field}: {folder} has {found} class folders but '
            f'model.head.num_classes is {num_classes}: the labels from '
            f'{num_classes} on have no output; set num_classes={found}')
    if found < num_classes:
        warnings.warn(
            f'{field}: {folder} has {found} class folder(s) while '
            f'model.head.num_classes is {num_classes}: the model is trained '
            f'on {found} of its classes only' +
            (' (one class: every image gets it, accuracy is 100 % and '
             'meaningless)' if found == 1 else '') +
            '. Check data_prefix, or set num_classes to the folder count.',
            UserWarning, stacklevel=2)


def check_image_folders(cfg) -> None:
    """Run :func:`check_image_folder` on every dataloader of ``cfg`` whose
    dataset is MMPretrain's ``CustomDataset`` in the folder layout."""
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field, None)
        dataset = loader.get('dataset') if isinstance(loader, dict) else None
        if not isinstance(dataset, dict) or dataset.get('type') not in (
                'CustomDataset', 'mmpretrain.CustomDataset') or \
                dataset.get('ann_file') or dataset.get('with_label') is False:
            continue
        folder = _folder_of(dataset)
        if '://' not in folder:
            found = check_image_folder(folder, f'{field}.dataset')
            head = (cfg.get('model') or {}).get('head') or {}
            if field == 'train_dataloader' and found is not None and \
                    isinstance(head, dict):
                check_class_count(found, head.get('num_classes'),
                                  f'{field}.dataset', folder)
