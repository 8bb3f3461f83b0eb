# Ablation on digits: gamma = 1.0 (Fig. 7).
_base_ = '../../mmpretrain/digits/resnet18_gal_1xb32_digits.py'

optim_wrapper = dict(gamma=1.0)
