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
from pathlib import Path

# Run as a file, Python puts sweeps/ first on sys.path, not the repository
# root; under ``ray job submit --working-dir`` the root is the job's copy. Either way the root goes first.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from sweeps.cli import entry  # noqa: E402

main = entry("loss_weights", __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
