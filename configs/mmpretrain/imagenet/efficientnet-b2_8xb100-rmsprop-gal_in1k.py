# GAL twin of efficientnet-b2_8xb100-rmsprop_in1k.py: only the lines that add GAL.
# The paper's ImageNet settings: sigma 0.001, gamma 0.001, adjuster arch
# (512, 256), adjuster lr = the model's lr (0.016).
_base_ = './efficientnet-b2_8xb100-rmsprop_in1k.py'

custom_imports = dict(imports=['mmgal'], allow_failed_imports=False)
optim_wrapper = dict(
    type='GALOptimWrapper', sigma=0.001, gamma=0.001, arch=(512, 256))
# A dict entry: merged with the base's default_hooks, so the base's
# custom_hooks (its EMAHook) stay as they are.
default_hooks = dict(gal=dict(type='GALHook'))
