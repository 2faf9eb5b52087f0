"""The paper's evaluation protocol (section 5, Tables 1 and 2), shared by training validation and reports.

One pass over a validation/test loader scores every method on the same faces:

* **Table 1** (super-resolution): PSNR and SSIM (RGB, see :mod:`superfan.metrics`) of each *image source*
  against HR, per yaw bin and balanced, and the grid artefact (``metrics.grid_artefact``: power at the
  2- and 4-px periods relative to HR, all faces). Sources: ``bilinear`` and ``bicubic`` (the baselines)
  and each checkpoint's generator, labelled by the paper's variant name (:func:`variant_name`).
* **Table 2** (landmarks as an indirect quality measure): AUC at NME 0.1 per yaw bin and balanced, for
  ``FAN-bilinear`` / ``FAN-bicubic`` (teacher on the baselines), ``FAN-<variant>`` (teacher on a
  checkpoint's SR image, e.g. ``FAN-Ours-pixel``), ``Super-FAN`` (an end-to-end checkpoint's own jointly
  trained FAN on its own SR image) and ``FAN-HR`` (teacher on the HR image: the upper bound).

Choices where the paper is silent:

* Bilinear upsampling is ``F.interpolate(mode="bilinear", align_corners=False)`` of the 16x16 input.
* Bicubic upsampling is ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)``, clamped to
  [0, 1]: torch's antialiased path uses the Keys a = -0.5 kernel of MATLAB's ``imresize`` and PIL's
  ``BICUBIC`` (equal to PIL to 1e-7; the non-antialiased path is OpenCV's a = -0.75), i.e. the kernel
  ``superfan.data.degrade.downsample`` makes the LR with. It is the usual SR baseline ([20] and after).
* A FAN sees the generator's *unclamped* output, as in training and ``superfan enhance``; PSNR/SSIM and
  the figures use the output clamped to [0, 1]. Bilinear output of [0, 1] input never leaves [0, 1].
* Landmarks come from the last stack via ``faces.heatmaps_to_points`` (sub-pixel refinement).
* Faces without landmarks are skipped for NME/AUC but count for PSNR/SSIM; faces with unknown yaw count
  in the ``all`` columns but in no bin, hence not in ``balanced`` (see ``metrics.auc_by_pose``).
* Everything runs in float32 under ``torch.inference_mode`` (no bf16), so numbers do not depend on the
  device's autocast support.

:func:`evaluate_models` is the core (already-built models, any iterable of contract batches) and is what
the tests exercise; :func:`evaluate_methods` only loads checkpoints and the data stream around it.
"""

from superfan.evaluate.checkpoints import evaluate_methods, methods_from_checkpoints
from superfan.evaluate.methods import (
    BASELINES,
    SUPER_FAN,
    Kind,
    Method,
    standard_methods,
    upsample_bicubic,
    upsample_bilinear,
    variant_name,
)
from superfan.evaluate.results import FILES, RESULTS_FORMAT, evaluate_models, load_samples, write_outputs
from superfan.evaluate.scoring import fan_validation_metrics, validation_metrics

__all__ = [
    "BASELINES", "FILES", "RESULTS_FORMAT", "SUPER_FAN", "Kind", "Method", "evaluate_methods", "evaluate_models",
    "fan_validation_metrics", "load_samples", "methods_from_checkpoints", "standard_methods", "upsample_bicubic",
    "upsample_bilinear", "validation_metrics", "variant_name", "write_outputs",
]  # fmt: skip
