# Ablation on digits: gamma = 0.1 (Fig. 7).
_base_ = '../../mmpretrain/digits/resnet18_gal_1xb32_digits.py'

optim_wrapper = dict(gamma=0.1)
