# Baseline: MMPretrain's stock ResNet-18 CIFAR config on scikit-learn's
# digits (written as an image folder by `python tools/make_digits.py`),
# small enough for 2 CPU cores. GAL's twin: resnet18_gal_1xb32_digits.py.
_base_ = 'mmpretrain::resnet/resnet18_8xb16_cifar10.py'

data_root = 'data/digits'
# Digits are 8x8 greyscale; the stock network reads 3-channel 32x32. A
# quarter-width ResNet-18 keeps an epoch on 2 CPU cores in seconds.
model = dict(
    backbone=dict(base_channels=16),
    head=dict(in_channels=128, num_classes=10))
data_preprocessor = dict(
    num_classes=10, mean=[33.0] * 3, std=[72.0] * 3, to_rgb=False)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32), interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32), interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[6, 8], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0, deterministic=False)
