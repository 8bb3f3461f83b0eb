# Baseline: MMDetection's stock Deformable DETR R50 config, unchanged.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
