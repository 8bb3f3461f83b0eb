# Baseline: EfficientNet-B1 on CIFAR100 with SGD, the paper's CIFAR recipe
# (batch 320, lr 0.05, weight decay 1e-5, lr x0.1 at epochs 100 and 200).
# MMPretrain has no EfficientNet CIFAR config; this composes its stock
# EfficientNet-B1 model with its stock CIFAR100 dataset, schedule and runtime.
# Assumed (not stated by the paper): 300 epochs, 32x32 input as stored.
_base_ = [
    'mmpretrain::_base_/models/efficientnet_b1.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=100, topk=(1, )))
train_dataloader = dict(batch_size=320)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-5))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[100, 200], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=320)
