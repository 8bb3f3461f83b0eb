# Ablation on digits: normal random noise instead of the MLP's output, still
# normalised by Eq. 4 (Table VI).
_base_ = '../../mmpretrain/digits/resnet18_gal_1xb32_digits.py'

optim_wrapper = dict(adjuster='normal')
