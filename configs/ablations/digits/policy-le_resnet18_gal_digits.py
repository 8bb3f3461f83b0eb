# Ablation on digits: update policy 'le' (Fig. 8a; le = Algorithm 1 line 7 with
# <=, lt = line 7 with <, always = line 8, never = line 10).
_base_ = '../../mmpretrain/digits/resnet18_gal_1xb32_digits.py'

optim_wrapper = dict(policy='le')
