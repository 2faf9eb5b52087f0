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
from pathlib import Path

# Run as a file, Python puts sweeps/ first on sys.path, not the repository
# root; under ``ray job submit --working-dir`` the root is the job's copy. Either way the root goes first.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from sweeps.cli import entry  # noqa: E402

main = entry("block_layouts", __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
