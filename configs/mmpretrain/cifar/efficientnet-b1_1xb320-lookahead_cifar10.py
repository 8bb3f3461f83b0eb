# Baseline: efficientnet-b1_1xb320-sgd_cifar10.py with Lookahead(SGD), k=5, alpha=0.8.
_base_ = './efficientnet-b1_1xb320-sgd_cifar10.py'

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='Lookahead',
        base_optimizer='SGD',
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-5,
        k=5,
        alpha=0.8))
