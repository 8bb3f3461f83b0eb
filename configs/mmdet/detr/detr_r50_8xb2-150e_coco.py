# Baseline: MMDetection's stock DETR R50 150-epoch COCO config, unchanged
# (the paper's DETR setting). GAL's twin: detr_r50_8xb2-150e-gal_coco.py.
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
