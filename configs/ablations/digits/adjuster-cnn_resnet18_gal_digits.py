# Ablation on digits: a 1-D CNN adjuster with the MLP's widths as channels
# (Table VIII).
_base_ = '../../mmpretrain/digits/resnet18_gal_1xb32_digits.py'

optim_wrapper = dict(adjuster='cnn')
