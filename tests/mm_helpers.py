"""Shared helpers for the tests that run MMPretrain through the Runner."""
import copy
import glob
import json
import os.path as osp
import uuid

from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS_BASELINE = osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                           'resnet18_1xb32_digits.py')
DIGITS_GAL = osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                      'resnet18_gal_1xb32_digits.py')

# A deterministic pipeline (no random crop): resume must be bit-exact.
PLAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(16, 16), interpolation='bilinear'),
    dict(type='PackInputs'),
]


def digits_cfg(data_root: str,
               work_dir: str,
               gal: bool = True,
               n_train: int = 128,
               epochs: int = 1,
               width: int = 8,
               batch_size: int = 32,
               **gal_kwargs) -> Config:
    """The repo's digits config, shrunk to seconds on a CPU."""
    cfg = Config.fromfile(DIGITS_GAL if gal else DIGITS_BASELINE)
    cfg.work_dir = work_dir
    cfg.model.backbone.base_channels = width
    cfg.model.head.in_channels = width * 8
    for name, n in (('train_dataloader', n_train), ('val_dataloader', 64)):
        loader = cfg[name]
        loader.batch_size = batch_size
        loader.dataset.data_root = data_root
        loader.dataset.indices = n
        loader.dataset.pipeline = copy.deepcopy(PLAIN_PIPELINE)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.max_epochs = epochs
    cfg.default_hooks.logger.interval = 2
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.log_level = 'WARNING'
    # What the README promises bit-exact results for: a deterministic
    # pipeline and, on GPUs, deterministic kernels.
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.experiment_name = unique_name(work_dir)
    if gal:
        cfg.optim_wrapper.update(gal_kwargs)
    elif gal_kwargs:
        raise ValueError('GAL settings given for a baseline config')
    return cfg


def unique_name(work_dir: str) -> str:
    """An experiment name no other run in this process has: mmengine names
    its logger and visualizer instances by it (default: config name +
    timestamp), and two runs started within one second would share them,
    writing the second run's scalars into the first run's folder."""
    return f'{osp.basename(work_dir)}_{uuid.uuid4().hex[:8]}'


def cuda_ops_missing() -> bool:
    """True where the model would run on CUDA but mmcv was built without
    its CUDA ops (Deformable DETR, DINO and focal loss need them)."""
    import torch
    if not torch.cuda.is_available():
        return False
    from mmcv.ops import get_compiling_cuda_version
    return get_compiling_cuda_version() == 'not available'


def read_scalars(work_dir: str) -> list:
    """The json scalars mmengine's visualizer wrote (one dict per line)."""
    paths = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return [json.loads(line) for line in f]


def shrink_detector(cfg: Config, data_root: str, ann_file: str,
                    work_dir: str, **kwargs) -> Config:
    """A stock DETR-family config on the tiny COCO set, CPU-sized (see
    :func:`tiny_coco.tiny_detector_config`)."""
    from tiny_coco import tiny_detector_config
    return tiny_detector_config(cfg, data_root, ann_file, work_dir,
                                experiment_name=unique_name(work_dir),
                                **kwargs)


def stock_config(name: str) -> Config:
    """Load a config by its package path, e.g. 'mmdet::detr/x.py'."""
    import tempfile
    with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
        f.write(f'_base_ = {name!r}\n')
    return Config.fromfile(f.name)


VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus',
               'car', 'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse',
               'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')


def make_tiny_voc(root: str, num_images: int = 4, size: int = 48) -> str:
    """A VOC2007-layout multi-label set (JPEGImages, Annotations,
    ImageSets/Main/{trainval,test}.txt) of noise images, 1-3 labels each,
    as MMPretrain's ``VOC`` dataset reads it."""
    import os

    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    ids = [f'{i:06d}' for i in range(num_images)]
    for img_id in ids:
        Image.fromarray(rng.randint(0, 255, (size, size, 3)).astype(
            np.uint8)).save(osp.join(root, 'JPEGImages', f'{img_id}.jpg'))
        names = rng.choice(VOC_CLASSES, rng.randint(1, 4), replace=False)
        objects = ''.join(f'<object><name>{n}</name><difficult>0'
                          '</difficult></object>' for n in names)
        with open(osp.join(root, 'Annotations', f'{img_id}.xml'), 'w') as f:
            f.write(f'<annotation>{objects}</annotation>')
    for split in ('trainval', 'test'):
        with open(osp.join(root, 'ImageSets', 'Main', f'{split}.txt'),
                  'w') as f:
            f.write('\n'.join(ids) + '\n')
    return root


def readme_snippet(heading: str = '## Add GAL to a config you already '
                   'have') -> str:
    """The first python block of the README after ``heading``: what users
    copy."""
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    block = text.split(heading, 1)[1].split('```python\n', 1)[1]
    return block.split('```', 1)[0]


def with_base(snippet: str, base: str) -> str:
    """``snippet`` with its ``_base_`` line pointing at ``base``."""
    lines = snippet.splitlines()
    assert lines[0].startswith('_base_ = '), lines[0]
    return '\n'.join([f'_base_ = {base!r}'] + lines[1:]) + '\n'


class RealGAL:
    """The real GALOptimWrapper (policy 'le') as an adapter's gal_forward,
    recording (z, loss_fn, GALOutput, kwargs) of each GAL step."""

    def __init__(self, dim, sigma=0.3, lr=0.1, arch=(8, ), seed=1,
                 **kwargs):
        import torch
        from mmgal.engine import GALOptimWrapper
        self.wrapper = GALOptimWrapper(
            torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=lr),
            sigma=sigma, arch=arch, seed=seed, tentative_lr=lr, **kwargs)
        self.wrapper.setup_adjuster(dim)
        self.adjuster = self.wrapper.adjuster
        self.calls = []
        real = self.wrapper.learner.step_fn

        def recording(z, loss_fn, adjuster, **kw):
            out = real(z, loss_fn, adjuster, **kw)
            self.calls.append((z, loss_fn, out, kw))
            return out

        self.wrapper.learner.step_fn = recording

    def __call__(self, z, loss_fn, grouped=False):
        return self.wrapper.gal_forward(z, loss_fn, grouped)
