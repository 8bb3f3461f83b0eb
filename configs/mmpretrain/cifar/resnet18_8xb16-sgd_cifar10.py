# Baseline: MMPretrain's stock ResNet-18 CIFAR-10 config, unchanged (SGD).
_base_ = 'mmpretrain::resnet/resnet18_8xb16_cifar10.py'
