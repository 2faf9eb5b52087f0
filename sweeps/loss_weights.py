"""Sweep the loss weights beta, gamma, zeta of Eq. 5 against alpha = 1 (the main job).

The paper does not publish them; each is searched log-uniformly around the config's value (the
config's own values are the first trial), scored by balanced validation AUC across the pose bins. The
pixel weight alpha stays at the config's value: only the ratios matter (see sweeps/configs/tiny.yaml).

Run from the repository root: ``python sweeps/loss_weights.py``; on a cluster:
``ray job submit --address http://HEAD:8265 --working-dir . -- python sweeps/loss_weights.py --config
sweeps/configs/paper.yaml --storage s3://bucket/prefix model.perceptual_weights=URL`` (the paper
profile needs the ImageNet ResNet-50 of Eq. 2, or ``random``: see sweeps/configs/paper.yaml).
``--help`` lists the options.
"""

from __future__ import annotations

import sys

# No sys.path edit: ``sweeps`` is an installed package (``pip install -e .``), and under ``ray job submit
# --working-dir .`` Ray puts the job's copy of the repository first on PYTHONPATH.
from sweeps.cli import entry

main = entry("loss_weights", __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
