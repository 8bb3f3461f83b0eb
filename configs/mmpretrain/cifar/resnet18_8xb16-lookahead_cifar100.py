# Baseline: resnet18_8xb16-sgd_cifar100.py with Lookahead(SGD), k=5, alpha=0.8.
_base_ = './resnet18_8xb16-sgd_cifar100.py'

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='Lookahead',
        base_optimizer='SGD',
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        k=5,
        alpha=0.8))
