# Ablation on digits: sigma = 0.001 (Fig. 7).
_base_ = '../../mmpretrain/digits/resnet18_gal_1xb32_digits.py'

optim_wrapper = dict(sigma=0.001)
