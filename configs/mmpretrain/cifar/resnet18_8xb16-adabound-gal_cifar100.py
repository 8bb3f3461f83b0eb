# GAL twin of resnet18_8xb16-adabound_cifar100.py: only the lines that add GAL.
# The paper's settings for this dataset and optimizer: sigma 0.01,
# gamma 10.0, adjuster arch (256, 64, 32).
_base_ = './resnet18_8xb16-adabound_cifar100.py'

custom_imports = dict(imports=['mmgal'], allow_failed_imports=False)
optim_wrapper = dict(
    type='GALOptimWrapper', sigma=0.01, gamma=10.0, arch=(256, 64, 32))
# A dict entry: merged with the base's default_hooks, so the base's
# custom_hooks (EMAHook, ...) stay as they are.
default_hooks = dict(gal=dict(type='GALHook'))
