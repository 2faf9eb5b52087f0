"""CUDA paths: bf16 autocast + channels_last training steps, and inference agreeing with CPU.

CI has no GPU, so these run only where ``torch.cuda.is_available()``; the same code paths run in fp32 on
CPU in test_train.py and test_enhance.py. Run them with ``pytest -m gpu`` on a GPU machine, or with the
other GPU checks through ``scripts/gpu_checks.sh OUT_DIR``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CPU paths are covered elsewhere)"),
]

CUDA = torch.device("cuda")


@pytest.mark.parametrize("kind", ["fan", "pixel", "feature", "heatmap", "gan", "end2end"])
def test_stage_step_on_cuda_is_finite_and_moves_weights(kind: str) -> None:
    from superfan.bench.train import synthetic_batch
    from superfan.config import StageConfig, load_config
    from superfan.models import FAN
    from superfan.train.stages import StageRunner, build_nets

    cfg = load_config("tiny")
    torch.manual_seed(0)
    teacher = None if kind == "fan" else FAN.from_config(cfg.model.fan)
    nets = build_nets(cfg, [kind], CUDA, teacher=teacher)
    runner = StageRunner(StageConfig(name=kind, kind=kind, epochs=1), cfg, nets, total_steps=4, device=CUDA)
    trained = nets.fan if kind == "fan" else nets.generator
    before = [p.detach().clone() for p in trained.parameters()]
    stats = {}
    for _ in range(2):
        stats = runner.step(synthetic_batch(8, cfg))
    assert stats and all(np.isfinite(v) for v in stats.values()), stats
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters(), strict=True))
    if runner.channels_last:
        conv = next(m for m in trained.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_enhancer_on_cuda_agrees_with_cpu() -> None:
    from superfan.config import load_config
    from superfan.infer import Enhancer
    from superfan.models import FAN, Generator

    cfg = load_config("tiny")
    torch.manual_seed(0)
    gen, fan = Generator.from_config(cfg.model.generator), FAN.from_config(cfg.model.fan)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(6)]
    cpu = Enhancer(gen, fan, device=torch.device("cpu")).enhance(crops, float_output=True, return_heatmaps=True)
    fp32 = Enhancer(gen, fan, device=CUDA, precision="fp32").enhance(crops, float_output=True, return_heatmaps=True)
    bf16 = Enhancer(gen, fan, device=CUDA, precision="bf16").enhance(crops, float_output=True)
    np.testing.assert_allclose(fp32.sr, cpu.sr, atol=2e-3)
    np.testing.assert_allclose(fp32.heatmaps, cpu.heatmaps, atol=2e-3)
    # An untrained FAN's heatmaps are nearly flat, so a rounding difference can move a maximum: most points
    # agree to a small fraction of a pixel, not necessarily all.
    close = np.linalg.norm(fp32.landmarks - cpu.landmarks, axis=-1) < 0.1
    assert close.mean() > 0.9
    assert np.abs(bf16.sr - cpu.sr).mean() < 0.02
    assert np.isfinite(bf16.landmarks).all()


def test_training_loop_on_cuda_from_shards(tmp_path: Path) -> None:
    """The real loop (stream -> stages -> validation -> checkpoints) on CUDA: teacher, then the Super-FAN
    stages from it; every report finite, checkpoints load, the end2end FAN moved."""
    from shards.pack import PackOptions, pack
    from superfan.checkpoint import load_checkpoint
    from superfan.config import load_config
    from superfan.train.loop import run_training
    from superfan.train.reports import LocalReporter

    data = {}
    for split, n, seed in (("train", 48, 0), ("val", 16, 1)):
        pack(PackOptions(format="synthetic", src=str(n), dest=str(tmp_path / split), split=split, seed=seed,
                         workers=1, progress=False))  # fmt: skip
        data[split] = [str(tmp_path / split / "manifest.json")]
    cfg = load_config("tiny", ["data.samples_per_epoch=32", "data.val_samples=16", "data.batch_size=8"])
    cfg.data.train, cfg.data.val = data["train"], data["val"]
    for s in cfg.stages:
        s.epochs = 1
    teacher_rep = LocalReporter(tmp_path / "teacher")
    run_training({"config": cfg.to_dict(), "stages": ["teacher"]}, rank=0, world_size=1, device=CUDA,
                 report=teacher_rep)  # fmt: skip
    rep = LocalReporter(tmp_path / "superfan")
    run_training({"config": cfg.to_dict(), "stages": ["heatmap", "gan", "end2end"],
                  "teacher": teacher_rep.checkpoints[-1]}, rank=0, world_size=1, device=CUDA, report=rep)  # fmt: skip
    assert [r["stage"] for r in rep.reports] == ["heatmap", "gan", "end2end"]
    for r in rep.reports:
        assert all(np.isfinite(v) for k, v in r.items() if k.startswith(("train_loss_", "val_psnr", "val_nme")))
    teacher, last = load_checkpoint(teacher_rep.checkpoints[-1]), load_checkpoint(rep.checkpoints[-1])
    moved = [not torch.equal(teacher["fan"][k], last["fan"][k]) for k in teacher["fan"] if k.endswith("weight")]
    assert any(moved), "the jointly trained FAN did not change in end2end"


@pytest.mark.parametrize("backend", ["nccl", "cpu:gloo,cuda:nccl", "gloo"])
def test_collectives_under_each_gpu_backend(backend: str, tmp_path: Path) -> None:
    """The loop's reduction helpers in a real process group of each backend a GPU run may use (world 1:
    NCCL refuses two ranks on one GPU; the 2-rank case runs under gloo in test_distributed.py)."""
    import torch.distributed as dist

    from superfan.train import collectives as C

    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        want = "cuda" if backend == "nccl" else "cpu"
        assert C.collective_device().type == want
        assert C.mean_across_ranks({"a": 1.5}) == {"a": 1.5}
        assert C.min_max_across_ranks(3) == (3, 3)
        assert C.broadcast_object({"k": 1}, 0) == {"k": 1}
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("real_world", [False, True])
def test_device_augment_on_cuda_agrees_with_cpu(tmp_path: Path, real_world: bool) -> None:
    """``data.augment_on: device`` on CUDA (nvJPEG decode and round trips, grid_sample) makes the batch the same
    code makes on CPU from the same hand-over (tests/test_device_augment.py compares CPU with the loader path)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_stream import _write_shards

    from superfan.config import Config
    from superfan.data.device_augment import DeviceAugment
    from superfan.data.stream import make_loader

    _write_shards(tmp_path)
    cfg = Config()
    cfg.data.batch_size, cfg.data.samples_per_epoch, cfg.data.augment_on = 8, 16, "device"
    cfg.degrade.real_world = real_world
    for raw in make_loader(str(tmp_path), cfg, train=True, seed=0, num_workers=0):
        cpu, gpu = DeviceAugment(cfg, "cpu")(raw), DeviceAugment(cfg, CUDA)(raw)
        assert gpu["hr"].is_cuda and gpu["lr"].is_cuda and gpu["heatmaps"].is_cuda
        assert float((gpu["hr"].cpu() - cpu["hr"]).abs().mean()) < 1.5 / 255  # nvJPEG vs libjpeg decode
        assert float((gpu["lr"].cpu() - cpu["lr"]).abs().mean()) < 3 / 255
        lm = cpu["has_landmarks"]
        assert torch.allclose(gpu["landmarks"].cpu()[lm], cpu["landmarks"][lm], atol=1e-3)
        assert torch.allclose(gpu["heatmaps"].cpu(), cpu["heatmaps"], atol=1e-4)


def test_compiled_stage_step_on_cuda_keeps_checkpoint_names() -> None:
    """``train.compile``: the end2end step (generator, FAN, ResNet-50 compiled; the critic eager for its double
    backward) runs and is finite, and the weights keep their names, so checkpoints load either way."""
    from superfan.bench.train import synthetic_batch
    from superfan.config import StageConfig, load_config
    from superfan.models import FAN
    from superfan.train.stages import StageRunner, build_nets

    cfg = load_config("tiny", ["train.compile=true"])
    torch.manual_seed(0)
    nets = build_nets(cfg, ["end2end"], CUDA, teacher=FAN.from_config(cfg.model.fan))
    names = set(nets.generator.state_dict())
    runner = StageRunner(StageConfig(name="e", kind="end2end", epochs=1), cfg, nets, total_steps=4, device=CUDA)
    for _ in range(2):
        stats = runner.step(synthetic_batch(8, cfg))
    assert all(np.isfinite(v) for v in stats.values())
    assert getattr(nets.generator, "_superfan_compiled", False)
    assert not getattr(nets.critic, "_superfan_compiled", False)
    assert set(nets.generator.state_dict()) == names
