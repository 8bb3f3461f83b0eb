# GAL twin of detr_r101_8xb2-150e_coco.py:
# only the lines that add GAL, with the paper's
# DETR settings: z = the predicted boxes (4 floats per query), adjuster
# 4 -> 64 -> 16 -> 4, sigma 0.01, gamma 1.
_base_ = './detr_r101_8xb2-150e_coco.py'

custom_imports = dict(imports=['mmgal'], allow_failed_imports=False)
optim_wrapper = dict(
    type='GALOptimWrapper', sigma=0.01, gamma=1.0, arch=(64, 16))
# A dict entry: merged with the base's default_hooks, so the base's
# custom_hooks (EMAHook, ...) stay as they are.
default_hooks = dict(gal=dict(type='GALHook'))
