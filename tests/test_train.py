"""Training unit tests: real models, real optimisers, in-process (no Ray) via the same step and loop code.

Sizes are far below the ``tiny`` profile so every test runs in seconds on one core.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from superfan.bench.train import synthetic_batch
from superfan.checkpoint import load_checkpoint, models_from_checkpoint, save_checkpoint
from superfan.config import Config, StageConfig, load_config
from superfan.errors import IntegrityError, TrainingDiverged
from superfan.stagekinds import STAGE_SPECS
from superfan.train.loop import run_training
from superfan.train.reports import LocalReporter
from superfan.train.stages import StageRunner, build_nets, lr_at

BATCH = 4


def micro_config(*extra: str) -> Config:
    cfg = load_config(
        "tiny",
        [
            "model.generator.layout=[1,1,1]",
            "model.generator.channels=8",
            "model.critic.channels=8",
            "model.fan.features=16",
            "model.fan.hourglass_depth=2",
            "losses.perceptual.layers=[layer1]",
            f"data.batch_size={BATCH}",
            f"data.samples_per_epoch={2 * BATCH}",
            "data.num_workers=0",
            *extra,
        ],
    )
    return cfg


def _snapshot(net: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if net is None else {k: v.detach().clone() for k, v in net.named_parameters()}


def _changed(before: dict[str, torch.Tensor] | None, net: torch.nn.Module | None) -> bool | None:
    if before is None or net is None:
        return None
    return any(not torch.equal(before[k], v.detach()) for k, v in net.named_parameters())


@pytest.mark.parametrize("kind", list(STAGE_SPECS))
def test_one_step_moves_exactly_the_stage_networks(kind: str) -> None:
    from superfan.models import FAN

    torch.manual_seed(0)
    cfg = micro_config()
    teacher = FAN.from_config(cfg.model.fan)
    nets = build_nets(cfg, [kind], torch.device("cpu"), teacher=None if kind == "fan" else teacher)
    before = {n: _snapshot(getattr(nets, n)) for n in ("generator", "critic", "fan", "teacher")}
    runner = StageRunner(StageConfig(name=kind, kind=kind, epochs=1), cfg, nets, total_steps=10)
    out = runner.step(synthetic_batch(BATCH, cfg))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    trains = set(STAGE_SPECS[kind].trains)
    for name in ("generator", "critic", "fan", "teacher"):
        moved = _changed(before[name], getattr(nets, name))
        if moved is None:
            assert name not in trains
            continue
        assert moved == (name in trains), f"{kind}: {name} moved={moved}, should train={name in trains}"
    expected = {"fan": {"heatmap_gt"}, "pixel": {"pixel"}, "feature": {"pixel", "perceptual"}}.get(
        kind,
        {"pixel", "perceptual", "heatmap"} | ({"adversarial", "critic"} if kind in {"gan", "end2end"} else set()),
    )
    assert expected <= set(out), f"{kind}: losses {sorted(out)}"


def _end2end_fan_after_one_step(eta: float, has_landmarks: bool) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    from superfan.models import FAN

    torch.manual_seed(0)
    cfg = micro_config(f"losses.landmark.weight={eta}")
    teacher = FAN.from_config(cfg.model.fan)
    nets = build_nets(cfg, ["end2end"], torch.device("cpu"), teacher=teacher)
    runner = StageRunner(StageConfig(name="e", kind="end2end", epochs=1), cfg, nets, total_steps=10)
    batch = synthetic_batch(BATCH, cfg)
    batch["has_landmarks"] = torch.full((BATCH,), has_landmarks)
    torch.manual_seed(1)
    out = runner.step(batch)
    return out, _snapshot(nets.fan) or {}


def test_end2end_fan_learns_ground_truth_landmarks_where_faces_have_them() -> None:
    with_gt, fan_gt = _end2end_fan_after_one_step(0.5, has_landmarks=True)
    off, fan_off = _end2end_fan_after_one_step(0.0, has_landmarks=True)
    unlabelled, fan_unlabelled = _end2end_fan_after_one_step(0.5, has_landmarks=False)
    assert with_gt["landmark"] > 0 and "landmark" not in off
    # eta 0 is today's end2end (teacher only); with no labelled face the term is an exact zero, and the
    # step is eta 0's step to the bit.
    assert unlabelled["landmark"] == 0.0
    assert all(torch.equal(fan_off[k], fan_unlabelled[k]) for k in fan_off)
    assert any(not torch.equal(fan_off[k], fan_gt[k]) for k in fan_off)
    assert with_gt["total"] == pytest.approx(off["total"] + 0.5 * with_gt["landmark"], rel=1e-5)


def test_gradient_penalty_is_taken_on_interpolates() -> None:
    """With real == fake every interpolate is the real image, so the penalty must equal the hand-computed
    ``lambda * E[(||grad D(x)|| - 1)^2]`` at x; with real != fake it must be evaluated elsewhere."""
    from superfan.losses import critic_loss, gradient_penalty
    from superfan.models import Critic

    torch.manual_seed(0)
    critic = Critic(channels=8)
    real = torch.rand(BATCH, 3, 64, 64)
    fake = torch.rand(BATCH, 3, 64, 64)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    manual = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    gp_same = gradient_penalty(critic, real, real.clone())
    assert torch.allclose(gp_same.float(), manual, rtol=1e-4, atol=1e-6)
    gp_at_fake = gradient_penalty(critic, fake, fake.clone())
    gp_mixed = gradient_penalty(critic, real, fake)
    assert not torch.allclose(gp_mixed, gp_same) and not torch.allclose(gp_mixed, gp_at_fake)
    # The critic loss carries the penalty (lambda = 10) and the penalty has a gradient for the critic.
    loss0, _ = critic_loss(critic, real, fake, 0.0)
    torch.manual_seed(1)
    loss10, stats = critic_loss(critic, real, fake, 10.0)
    assert float(loss10.detach()) > float(loss0.detach())
    assert stats, "critic_loss should return its statistics (Wasserstein estimate, penalty)"
    loss10.backward()
    assert all(p.grad is not None for p in critic.parameters())


def test_gan_step_reports_critic_statistics() -> None:
    from superfan.models import FAN

    cfg = micro_config()
    nets = build_nets(cfg, ["gan"], torch.device("cpu"), teacher=FAN.from_config(cfg.model.fan))
    runner = StageRunner(StageConfig(name="gan", kind="gan", epochs=1), cfg, nets, total_steps=4)
    out = runner.step(synthetic_batch(BATCH, cfg))
    stats = {k: v for k, v in out.items() if k.startswith("critic_")}
    assert stats and all(torch.isfinite(torch.tensor(v)) for v in stats.values())


def test_lr_schedule_endpoints() -> None:
    s = StageConfig(name="a", kind="pixel", epochs=1)
    assert lr_at(s, 0, 100) == pytest.approx(2.5e-4)
    assert lr_at(s, 99, 100) == pytest.approx(1e-5)
    assert lr_at(s, 50, 100) < 2.5e-4
    assert lr_at(StageConfig(name="b", kind="end2end", epochs=1, lr_decay="constant"), 99, 100) == 2.5e-4
    cos = StageConfig(name="c", kind="pixel", epochs=1, lr_decay="cosine")
    assert lr_at(cos, 99, 100) == pytest.approx(1e-5)


# ---------------------------------------------------------------------------------- the loop, in process


def _loader_factory(cfg: Config, *, train: bool, rank: int, world_size: int, epoch: int) -> list[dict]:
    """Deterministic batches per epoch (the loop's data contract), different each epoch."""
    n = (cfg.data.samples_per_epoch or BATCH) // cfg.data.batch_size
    out = []
    for i in range(n):
        torch.manual_seed(1000 * epoch + i)
        b = synthetic_batch(cfg.data.batch_size, cfg)
        b["hr"] = torch.rand_like(b["hr"])
        b["lr"] = torch.nn.functional.interpolate(b["hr"], size=(16, 16), mode="area")
        out.append(b)
    return out


@pytest.fixture
def teacher_ckpt(tmp_path: Path) -> str:
    from superfan.models import FAN

    cfg = micro_config()
    torch.manual_seed(0)
    fan = FAN.from_config(cfg.model.fan)
    payload = {
        "stage": "teacher",
        "stage_kind": "fan",
        "stage_index": 0,
        "epoch": 1,
        "global_epoch": 1,
        "step": 1,
        "generator": None,
        "critic": None,
        "fan": fan.state_dict(),
        "optimizers": {},
        "schedulers": {},
        "config": cfg.to_dict(),
        "metrics": {},
        "perceptual_pretrained": False,
        "perceptual_weights": None,
        "teacher": None,
    }
    d = tmp_path / "teacher"
    save_checkpoint(d, payload)
    return str(d)


def _loop_config(cfg: Config, teacher: str, **extra: Any) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "stages": [s.name for s in cfg.stages], "teacher": teacher, **extra}


def _run(cfg: Config, teacher: str, root: Path, resume: dict | None = None, **extra: Any) -> LocalReporter:
    rep = LocalReporter(root)
    run_training(
        _loop_config(cfg, teacher, **extra),
        rank=0,
        world_size=1,
        device=torch.device("cpu"),
        report=rep,
        resume=resume,
        loader_factory=_loader_factory,
    )
    return rep


def test_resume_continues_step_count_lr_schedule_and_weights(tmp_path: Path, teacher_ckpt: str) -> None:
    cfg = micro_config()
    cfg.stages = [StageConfig(name="heatmap", kind="heatmap", epochs=3)]
    full = _run(cfg, teacher_ckpt, tmp_path / "full")
    assert [r["step"] for r in full.reports] == [2, 4, 6]
    assert [r["global_epoch"] for r in full.reports] == [1, 2, 3]
    assert full.reports[0]["lr"] > full.reports[1]["lr"] > full.reports[2]["lr"]

    first = load_checkpoint(full.checkpoints[0])
    assert (first["epoch"], first["step"], first["schedulers"]["generator"]["step"]) == (1, 2, 2)
    resumed = _run(cfg, teacher_ckpt, tmp_path / "resumed", resume=first)
    assert [r["step"] for r in resumed.reports] == [4, 6]
    assert [r["epoch"] for r in resumed.reports] == [2, 3]
    assert [r["lr"] for r in resumed.reports] == pytest.approx([r["lr"] for r in full.reports[1:]])
    a, b = load_checkpoint(full.checkpoints[-1]), load_checkpoint(resumed.checkpoints[-1])
    for k, v in a["generator"].items():
        assert torch.allclose(v.float(), b["generator"][k].float(), atol=1e-6), k


def test_chain_moves_from_stage_to_stage_and_resumes_at_stage_boundary(tmp_path: Path, teacher_ckpt: str) -> None:
    cfg = micro_config()
    cfg.stages = [
        StageConfig(name="pixel", kind="pixel", epochs=1),
        StageConfig(name="gan", kind="gan", epochs=1, init_from="pixel"),
        StageConfig(name="end2end", kind="end2end", epochs=1, init_from="gan", lr_decay="constant"),
    ]
    full = _run(cfg, teacher_ckpt, tmp_path / "chain")
    assert [r["stage"] for r in full.reports] == ["pixel", "gan", "end2end"]
    assert [r["global_epoch"] for r in full.reports] == [1, 2, 3]
    last = load_checkpoint(full.checkpoints[-1])
    assert last["stage_kind"] == "end2end" and last["teacher"] == teacher_ckpt
    # The integrated FAN moved only in end2end: equal to the teacher after gan, different after end2end.
    teacher_fan = load_checkpoint(teacher_ckpt)["fan"]
    after_gan = load_checkpoint(full.checkpoints[1])
    assert all(torch.equal(after_gan["fan"][k], v) for k, v in teacher_fan.items() if v.is_floating_point())
    assert any(not torch.equal(last["fan"][k], v) for k, v in teacher_fan.items() if v.is_floating_point())
    # Resuming from the finished pixel stage starts the gan stage.
    resumed = _run(cfg, teacher_ckpt, tmp_path / "resumed", resume=load_checkpoint(full.checkpoints[0]))
    assert [r["stage"] for r in resumed.reports] == ["gan", "end2end"]
    assert resumed.reports[-1]["step"] == full.reports[-1]["step"]


def _tree_hash(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def test_nan_loss_raises_and_keeps_the_previous_checkpoint(tmp_path: Path, teacher_ckpt: str) -> None:
    cfg = micro_config()
    cfg.stages = [StageConfig(name="feature", kind="feature", epochs=3)]
    root = tmp_path / "run"
    ok = _run(cfg, teacher_ckpt, root)
    good = Path(ok.checkpoints[0])
    before = _tree_hash(root)
    resume = load_checkpoint(good)
    rep = LocalReporter(root)
    with pytest.raises(TrainingDiverged, match="not finite"):
        run_training(
            _loop_config(cfg, teacher_ckpt, debug={"nan_at_step": 3}),
            rank=0,
            world_size=1,
            device=torch.device("cpu"),
            report=rep,
            resume=resume,
            loader_factory=_loader_factory,
        )
    assert rep.checkpoints == [] and rep.reports == []
    assert _tree_hash(root) == before
    assert load_checkpoint(good)["step"] == 2


def test_checkpoint_round_trip_weights_only(tmp_path: Path, teacher_ckpt: str) -> None:
    cfg = micro_config()
    cfg.stages = [StageConfig(name="gan", kind="gan", epochs=1)]
    rep = _run(cfg, teacher_ckpt, tmp_path / "run")
    d = Path(rep.checkpoints[-1])
    assert {p.name for p in d.iterdir()} == {"checkpoint.pt", "config.yaml", "metrics.json"}
    raw = torch.load(d / "checkpoint.pt", weights_only=True)
    assert raw["format"] == "superfan-checkpoint/1" and raw["stage_kind"] == "gan"
    payload = load_checkpoint(d / "checkpoint.pt")
    models = models_from_checkpoint(payload)
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        sr = models["generator"](lr)
        assert sr.shape == (2, 3, 64, 64)
        assert models["critic"](sr).shape == (2,)
        assert models["fan"](sr)[-1].shape[:2] == (2, 68)
    assert not models["generator"].training
    # A file that is not a superfan checkpoint is refused with one line.
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"format": "something-else"}, bad / "checkpoint.pt")
    with pytest.raises(IntegrityError, match="not a superfan checkpoint"):
        load_checkpoint(bad)


def test_mid_epoch_reports_carry_counters_without_checkpoints(tmp_path: Path, teacher_ckpt: str) -> None:
    cfg = micro_config()
    cfg.train.report_every_steps = 1
    cfg.stages = [StageConfig(name="pixel", kind="pixel", epochs=2)]
    rep = _run(cfg, teacher_ckpt, tmp_path / "run")
    assert [(r["step"], r["partial_epoch"]) for r in rep.reports] == [
        (1, True),
        (2, False),
        (3, True),
        (4, False),
    ]
    assert [r["global_epoch"] for r in rep.reports] == [0, 1, 1, 2]
    assert len(rep.checkpoints) == 2


def test_trainer_ships_absolute_local_paths(tmp_path: Path, teacher_ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's workers run in another directory: relative data/teacher paths are anchored where the trainer is
    built, URLs pass unchanged, and the caller's config is not modified."""
    import os

    from superfan.train.driver import build_trainer

    monkeypatch.chdir(tmp_path)
    cfg = micro_config()
    cfg.stages = [StageConfig(name="heatmap", kind="heatmap", epochs=1)]
    cfg.data.train, cfg.data.val = ["shards/train/manifest.json"], ["s3://bucket/val/manifest.json"]
    teacher = os.path.relpath(teacher_ckpt, tmp_path)
    trainer = build_trainer(cfg, name="paths", storage=str(tmp_path / "runs"), teacher=teacher)
    loop = trainer.train_loop_config
    assert loop["config"]["data"]["train"] == [str(tmp_path / "shards/train/manifest.json")]
    assert loop["config"]["data"]["val"] == ["s3://bucket/val/manifest.json"]
    assert loop["teacher"] == str(Path(teacher_ckpt).absolute())
    assert cfg.data.train == ["shards/train/manifest.json"]


def test_resume_against_another_teacher_is_refused(tmp_path: Path, teacher_ckpt: str) -> None:
    from superfan.errors import ConfigError
    from superfan.models import FAN

    cfg = micro_config()
    cfg.stages = [StageConfig(name="heatmap", kind="heatmap", epochs=2)]
    first = load_checkpoint(_run(cfg, teacher_ckpt, tmp_path / "a").checkpoints[0])
    assert len(first["teacher_sha256"]) == 64
    other = load_checkpoint(teacher_ckpt)
    torch.manual_seed(1)
    other["fan"] = FAN.from_config(cfg.model.fan).state_dict()
    save_checkpoint(tmp_path / "other-teacher", other)
    with pytest.raises(ConfigError, match=r"trained against teacher .*teacher \(sha256 .*this run's teacher is"):
        _run(cfg, str(tmp_path / "other-teacher"), tmp_path / "b", resume=first)
    # The same weights under another path are the same teacher.
    save_checkpoint(tmp_path / "copy", load_checkpoint(teacher_ckpt))
    assert _run(cfg, str(tmp_path / "copy"), tmp_path / "c", resume=first).reports[-1]["epoch"] == 2


def test_workers_never_get_credentials_and_ask_for_configured_gpus(
    tmp_path: Path, teacher_ckpt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superfan.errors import ConfigError
    from superfan.train.driver import backend, build_trainer, worker_resources
    from superfan.train.session import FORWARD_ENV

    for key, value in (("AWS_SECRET_ACCESS_KEY", "s3cr3t"), ("AWS_SESSION_TOKEN", "t0k3n"),
                       ("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_ENDPOINT_URL", "http://127.0.0.1:1")):  # fmt: skip
        monkeypatch.setenv(key, value)
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"} & set(FORWARD_ENV)
    cfg = micro_config()
    cfg.stages = [StageConfig(name="heatmap", kind="heatmap", epochs=1)]
    trainer = build_trainer(cfg, name="env", storage=str(tmp_path / "runs"), teacher=teacher_ckpt)
    env = (trainer.run_config.worker_runtime_env or {}).get("env_vars", {})
    assert env.get("AWS_ENDPOINT_URL") == "http://127.0.0.1:1"
    assert "s3cr3t" not in repr(trainer.run_config) and "t0k3n" not in repr(trainer.run_config)

    cfg.train.use_gpu, cfg.train.gpus_per_worker = True, 0.25
    assert worker_resources(cfg, True) == {"CPU": cfg.train.cpus_per_worker, "GPU": 0.25}
    assert backend(cfg, True) == "gloo" and backend(cfg, False) == "gloo"
    cfg.train.gpus_per_worker = 1
    assert backend(cfg, True) == "nccl"
    with pytest.raises(ConfigError, match="NCCL refuses two ranks on one GPU"):
        load_config("tiny", ["train.backend=nccl", "train.workers=2", "train.gpus_per_worker=0.5"])


def test_carried_rmsprop_state_keeps_the_first_update_of_a_stage_small() -> None:
    """A fresh RMSprop divides the first gradients by sqrt((1 - alpha) g^2), about 10x the learning rate per
    weight; the carried state of the previous stage keeps the update near the learning rate. (Fig. 3a's
    generator: tiny's bicubic residual starts its output conv at zero, which blurs the per-weight average.)"""
    torch.manual_seed(0)
    cfg = micro_config("model.generator.residual=none", "model.generator.upsample=subpixel")
    nets = build_nets(cfg, ["pixel", "feature"], torch.device("cpu"))
    pixel = StageRunner(StageConfig(name="pixel", kind="pixel", epochs=1, lr_decay="constant"), cfg, nets, 30)
    for i in range(30):
        torch.manual_seed(i)
        pixel.step(synthetic_batch(BATCH, cfg))
    start = {k: v.detach().clone() for k, v in nets.generator.state_dict().items()}
    torch.manual_seed(99)
    batch = synthetic_batch(BATCH, cfg)

    def first_update(carry: bool) -> float:
        nets.generator.load_state_dict(start)
        stage = StageConfig(name="feature", kind="feature", epochs=1, lr_decay="constant")
        runner = StageRunner(stage, cfg, nets, 10)
        if carry:
            assert runner.adopt_optimizer_states(pixel.state_dict()["optimizers"]) == ["generator"]
        runner.step(batch)
        moved = [(p.detach() - start[n]).abs().mean() for n, p in nets.generator.named_parameters()]
        return float(torch.stack(moved).mean())

    fresh, carried = first_update(False), first_update(True)
    assert fresh > 5 * 2.5e-4  # the burst: several times the learning rate
    assert carried < fresh / 3, (carried, fresh)


def test_warmup_ramps_up_to_the_decay_curve() -> None:
    from superfan.config import StageConfig
    from superfan.train.stages import lr_at

    st = StageConfig(name="p", kind="pixel", epochs=1, lr_start=1e-3, lr_end=1e-4, warmup_steps=4)
    plain = st.model_copy(update={"warmup_steps": 0})
    assert lr_at(st, 0, 100) == pytest.approx(0.25 * lr_at(plain, 0, 100))
    assert lr_at(st, 3, 100) == pytest.approx(lr_at(plain, 3, 100))
    assert lr_at(st, 99, 100) == pytest.approx(1e-4)


def test_teacher_validation_is_the_evaluators_with_the_configured_pose_bins(tmp_path: Path, teacher_ckpt: str) -> None:
    """The teacher stage scores FAN-HR by superfan.evaluate's own pass, in the bins the config names (it
    once used its own scoring and the default bins)."""
    cfg = micro_config("eval.pose_bins=[0,45]", "data.val=[val-batches-come-from-the-test-loader]")
    cfg.stages = [StageConfig(name="teacher", kind="fan", epochs=1)]
    rep = _run(cfg, teacher_ckpt, tmp_path / "teacher")
    report = rep.reports[-1]
    assert {"val_auc_0_45", "val_auc_45_90", "val_faces_0_45", "val_faces_45_90"} <= set(report), sorted(report)
    assert not any(k.startswith("val_auc_0_30") for k in report)
    assert report["val_faces_landmarks"] == report["val_faces_0_45"] + report["val_faces_45_90"] > 0
    assert 0.0 <= report["val_auc"] <= 1.0


def test_epoch_lines_follow_the_drivers_no_progress(
    tmp_path: Path, teacher_ckpt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's one line per epoch is progress: a worker of a run started with --no-progress or --quiet
    (SUPERFAN_PROGRESS=0, set by ray_session and inherited or forwarded) prints none; reports are unchanged."""
    from superfan.cliargs import PROGRESS_ENV

    cfg = micro_config()
    cfg.stages = [StageConfig(name="heatmap", kind="heatmap", epochs=1)]
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert len(_run(cfg, teacher_ckpt, tmp_path / "a").reports) == 1
    assert "[heatmap] epoch 1/1" in capsys.readouterr().out
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert len(_run(cfg, teacher_ckpt, tmp_path / "b").reports) == 1
    assert "epoch 1/1" not in capsys.readouterr().out
