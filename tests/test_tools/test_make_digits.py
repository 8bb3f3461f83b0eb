"""Dataset makers leave exactly the split they report."""
import glob
import json
import os.path as osp

import pytest

from make_digits import make_digits_images
from tiny_coco import make_tiny_coco


def files(root, split):
    return {osp.basename(p) for p in glob.glob(osp.join(root, split, '*',
                                                        '*.png'))}


def test_digits_rewritten_with_another_seed_leaves_no_val_image_in_train(
        tmp_path):
    root = str(tmp_path)
    assert make_digits_images(root) == {'train': 1437, 'val': 360}
    with pytest.warns(UserWarning, match='replaced the dataset'):
        counts = make_digits_images(root, seed=1)
    train, val = files(root, 'train'), files(root, 'val')
    assert counts == {'train': len(train), 'val': len(val)} == {
        'train': 1437, 'val': 360}
    assert not train & val
    # The same settings again: nothing rewritten, nothing warned.
    assert make_digits_images(root, seed=1) == counts


def test_digits_refuses_to_delete_files_it_did_not_write(tmp_path):
    (tmp_path / 'train' / 'cat').mkdir(parents=True)
    (tmp_path / 'train' / 'cat' / 'mine.jpg').write_bytes(b'x')
    with pytest.raises(FileExistsError, match=r'mine\.jpg was not written by '
                       'make_digits_images'):
        make_digits_images(str(tmp_path))
    assert (tmp_path / 'train' / 'cat' / 'mine.jpg').exists()


def test_tiny_coco_rewritten_smaller_keeps_only_its_images(tmp_path):
    make_tiny_coco(str(tmp_path), num_images=6)
    with pytest.warns(UserWarning, match='replaced the dataset'):
        ann = make_tiny_coco(str(tmp_path), num_images=3)
    with open(ann) as f:
        listed = {im['file_name'] for im in json.load(f)['images']}
    on_disk = {osp.basename(p) for p in glob.glob(
        osp.join(str(tmp_path), 'images', '*'))}
    assert listed == on_disk and len(on_disk) == 3
