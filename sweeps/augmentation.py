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
from pathlib import Path

# Run as a file, Python puts sweeps/ first on sys.path, not the repository
# root; under ``ray job submit --working-dir`` the root is the job's copy. Either way the root goes first.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from sweeps.cli import entry  # noqa: E402

main = entry("augmentation", __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
