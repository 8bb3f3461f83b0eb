# The README's quick start: the baseline config plus the lines that add GAL.
_base_ = './resnet18_1xb32_digits.py'

custom_imports = dict(imports=['mmgal'], allow_failed_imports=False)
optim_wrapper = dict(
    type='GALOptimWrapper', sigma=0.01, gamma=1.0, arch=(100, 32, 16))
# A dict entry: merged with the base's default_hooks, so the base's
# custom_hooks (EMAHook, ...) stay as they are.
default_hooks = dict(gal=dict(type='GALHook'))
