# The README's quick start: the baseline config plus the lines that add GAL.
_base_ = './resnet18_1xb32_digits.py'

custom_imports = dict(imports=['mmgal'], allow_failed_imports=False)
optim_wrapper = dict(
    type='GALOptimWrapper', sigma=0.01, gamma=1.0, arch=(100, 32, 16))
custom_hooks = [dict(type='GALHook')]
