"""Sweep the generator's block layout N1-N2-N3 under a total-block budget.

A categorical over valid layouts (section 4.1 compares 12-3-2 with SRResNet's 16-1-1): the paper's
point is that blocks at low resolution are cheap and help; the sweep checks it on our data.

Run from the repository root: ``python sweeps/block_layouts.py``; on a cluster:
``ray job submit --address http://HEAD:8265 --working-dir . -- python sweeps/block_layouts.py --config
sweeps/configs/paper.yaml --storage s3://bucket/prefix model.perceptual_weights=URL`` (the paper
profile needs the ImageNet ResNet-50 of Eq. 2, or ``random``: see sweeps/configs/paper.yaml).
``--help`` lists the options.
"""

from __future__ import annotations

import sys

# No sys.path edit: ``sweeps`` is an installed package (``pip install -e .``), and under ``ray job submit
# --working-dir .`` Ray puts the job's copy of the repository first on PYTHONPATH.
from sweeps.cli import entry

main = entry("block_layouts", __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
