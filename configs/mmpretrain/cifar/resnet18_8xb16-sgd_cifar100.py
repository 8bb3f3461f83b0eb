# Baseline: the stock ResNet-18 CIFAR recipe on CIFAR-100, composed from
# MMPretrain's stock bases as its resnet50_8xb16_cifar100 config is.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=100))
