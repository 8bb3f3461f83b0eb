# Baseline: MMDetection's stock DETR R101 config on the 150-epoch schedule
# of its R50 150e config (the paper trains both for 150 epochs; the stock
# R101 config is 500 epochs).
_base_ = 'mmdet::detr/detr_r101_8xb2-500e_coco.py'

max_epochs = 150
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[100],
        gamma=0.1)
]
