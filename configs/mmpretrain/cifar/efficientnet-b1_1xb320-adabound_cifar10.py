# Baseline: efficientnet-b1_1xb320-sgd_cifar10.py with AdaBound (the paper's recipe: lr
# 1e-3, final_lr 0.1, gamma 1e-3, weight decay 5e-4).
_base_ = './efficientnet-b1_1xb320-sgd_cifar10.py'

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdaBound',
        lr=1e-3,
        final_lr=0.1,
        gamma=1e-3,
        weight_decay=5e-4))
