"""Ray Tune sweeps over Super-FAN training: thin entry points over one shared driver (``sweeps.common``).

``python sweeps/loss_weights.py`` (the main job), ``sweeps/block_layouts.py``, ``sweeps/augmentation.py``;
each runs embedded with no arguments and unchanged under ``ray job submit --working-dir . -- python ...``.
"""
