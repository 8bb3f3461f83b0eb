#!/usr/bin/env python
"""Write scikit-learn's digits as an image-folder dataset for MMPretrain.

    python tools/make_digits.py data/digits
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmgal.datasets import make_digits_images  # noqa: E402

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('root', nargs='?', default='data/digits')
    p.add_argument('--val-fraction', type=float, default=0.2)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()
    counts = make_digits_images(args.root, args.val_fraction, args.seed)
    print(f'digits written to {args.root}: {counts}')
