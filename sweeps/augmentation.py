"""Sweep augmentation strength and the real-world degradation ranges (section 5.3).

Scored on the validation set as packed; train with real-world degradation for champions meant for
real photos.

Run from the repository root: ``python sweeps/augmentation.py``; on a cluster:
``ray job submit --address http://HEAD:8265 --working-dir . -- python sweeps/augmentation.py --config
sweeps/configs/paper.yaml --storage s3://bucket/prefix model.perceptual_weights=URL`` (the paper
profile needs the ImageNet ResNet-50 of Eq. 2, or ``random``: see sweeps/configs/paper.yaml).
``--help`` lists the options.
"""

from __future__ import annotations

import sys

# No sys.path edit: ``sweeps`` is an installed package (``pip install -e .``), and under ``ray job submit
# --working-dir .`` Ray puts the job's copy of the repository first on PYTHONPATH.
from sweeps.cli import entry

main = entry("augmentation", __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
