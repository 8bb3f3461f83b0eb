# Baseline: MMPretrain's stock resnet50 ImageNet config with the paper's
# RMSProp recipe (from timm): batch 100 per GPU x 8, lr 0.016, eps 1e-3,
# momentum 0.9, weight decay 1e-5, lr x0.97 every 2.4 epochs (here as a
# smooth per-epoch decay 0.97^(1/2.4)), 3 warm-up epochs, 90 epochs, EMA.
# Not reproduced from the timm recipe: RMSpropTF's eps inside the square
# root, RandAugment, random erasing, dropout and drop-connect.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'

train_dataloader = dict(batch_size=100)
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='RMSprop',
        lr=0.016,
        alpha=0.9,
        eps=1e-3,
        momentum=0.9,
        weight_decay=1e-5))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=3,
        convert_to_iter_based=True),
    dict(type='ExponentialLR', gamma=0.97**(1 / 2.4), by_epoch=True,
         begin=3),
]
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=1)
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=800)
