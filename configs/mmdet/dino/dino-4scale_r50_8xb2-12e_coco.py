# Baseline: MMDetection's stock DINO-4scale R50 12-epoch config, unchanged.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
