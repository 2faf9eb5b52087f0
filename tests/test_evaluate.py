"""The evaluation protocol on tiny real models and in-memory contract batches.

The oracle FAN sees only the image it is given, recognises which test face it is (nearest HR face after
downsampling) and returns heatmaps rendered from that face's ground truth: AUC ~1 and NME ~0 then prove the
whole landmark path (SR image -> FAN -> last stack -> heatmaps_to_points -> NME -> AUC) end to end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from superfan import metrics
from superfan.cli import main as cli_main
from superfan.config import Config
from superfan.evaluate import (
    Method,
    evaluate_models,
    standard_methods,
    upsample_bicubic,
    upsample_bilinear,
    validation_metrics,
    variant_name,
)
from superfan.landmarks import points_to_heatmaps, pose_bin

YAWS = [5.0, -12.0, 30.0, 45.0, -59.0, 60.0, 88.0, float("nan"), 20.0, -75.0, 35.0, 0.0]


def _faces(n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Smooth random 'faces' (distinct low-frequency images) with 68 landmarks inside a ~40x50 box."""
    g = torch.Generator().manual_seed(seed)
    hr = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=64, mode="bicubic", align_corners=False)
    hr = hr.clamp(0, 1)
    centre = torch.tensor([31.5, 31.5])
    pts = centre + (torch.rand(n, 68, 2, generator=g) - 0.5) * torch.tensor([40.0, 50.0])
    lr = F.interpolate(hr, size=16, mode="area")
    return {"hr": hr, "lr": lr, "landmarks": pts}


def _batches(faces: dict[str, torch.Tensor], bs: int = 4, no_landmarks: tuple[int, ...] = (3,)) -> list[dict]:
    """Contract batches; faces listed in ``no_landmarks`` have NaN landmarks, zero heatmaps, no flag."""
    n = len(faces["hr"])
    lm = faces["landmarks"].clone()
    has = torch.ones(n, dtype=torch.bool)
    for i in no_landmarks:
        lm[i] = float("nan")
        has[i] = False
    yaw = torch.tensor([YAWS[i % len(YAWS)] for i in range(n)])
    out = []
    for s in range(0, n, bs):
        sl = slice(s, s + bs)
        out.append(
            {
                "hr": faces["hr"][sl],
                "lr": faces["lr"][sl],
                "landmarks": lm[sl],
                "heatmaps": points_to_heatmaps(lm[sl], 64, 32),
                "has_landmarks": has[sl],
                "yaw": yaw[sl],
                "pose_source": ["estimated"] * len(lm[sl]),
                "key": [f"test/{i}" for i in range(s, min(s + bs, n))],
            }
        )
    return out


class OracleFAN(nn.Module):
    """Returns GT heatmaps of the known face nearest (at 16x16) to each input image; 2 stacks like FAN."""

    def __init__(self, faces: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("bank", F.interpolate(faces["hr"], size=16, mode="area").flatten(1))
        self.register_buffer("heat", points_to_heatmaps(faces["landmarks"], 64, 32))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        q = F.interpolate(x.clamp(0, 1), size=16, mode="area").flatten(1)
        idx = torch.cdist(q, self.bank).argmin(dim=1)
        hm = self.heat[idx]
        return [hm * 0.5, hm]


class TinyFAN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 68, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(68)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.bn(self.conv(x))
        return [h, h + 1]


class TinyGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=4, mode="nearest")
        return up + 0.1 * self.bn(self.conv(up))


@pytest.fixture(scope="module")
def faces() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return _faces()


def test_oracle_fan_gives_perfect_auc_through_the_whole_landmark_path(faces: dict) -> None:
    cfg = Config()
    oracle = OracleFAN(faces)
    out = validation_metrics(None, oracle, _batches(faces), cfg)  # FAN-bilinear with a perfect FAN
    assert out["val_nme"] < 0.003  # heatmap round trip < 0.1 px on a ~45 px box
    assert out["val_auc"] > 0.97
    for k in ("val_auc_balanced", "val_auc_0_30", "val_auc_30_60", "val_auc_60_90"):
        assert out[k] > 0.97, k
    # 12 faces, one without landmarks; yaw NaN for face 7 -> in no bin
    assert out["val_faces"] == 12 and out["val_faces_landmarks"] == 11
    assert out["val_faces_unknown_yaw"] == 1
    assert out["val_faces_0_30"] + out["val_faces_30_60"] + out["val_faces_60_90"] == 10
    # PSNR/SSIM count every face, including the one without landmarks
    up = upsample_bilinear(faces["lr"]).clamp(0, 1)
    assert out["val_psnr"] == pytest.approx(metrics.psnr(up, faces["hr"]).mean().item(), abs=1e-6)
    assert out["val_ssim"] == pytest.approx(metrics.ssim(up, faces["hr"]).mean().item(), abs=1e-6)
    assert out["val_grid_artefact"] == pytest.approx(metrics.grid_artefact(up, faces["hr"]), rel=1e-9)


def test_a_wrong_fan_scores_low(faces: dict) -> None:
    """Guards against an AUC that is high by construction: the same oracle on shuffled faces fails."""
    shuffled = {k: v.roll(1, dims=0) for k, v in faces.items()}
    shuffled["hr"], shuffled["lr"] = faces["hr"], faces["lr"]  # images right, landmarks of another face
    out = validation_metrics(None, OracleFAN(shuffled), _batches(faces), Config())
    assert out["val_auc_balanced"] < 0.5
    assert out["val_nme"] > 0.05


def test_validation_metrics_modes_keys_and_caps(faces: dict) -> None:
    cfg = Config()
    gen, fan = TinyGenerator().train(), TinyFAN().eval()
    teacher = TinyFAN().train()
    out = validation_metrics(gen, fan, _batches(faces), cfg, teacher=teacher, max_batches=2)
    assert gen.training and not fan.training and teacher.training  # each restored to its own mode
    required = {"val_auc_balanced", "val_auc_0_30", "val_auc_30_60", "val_auc_60_90", "val_nme", "val_psnr"}
    required.add("val_grid_artefact")
    assert required | {"val_ssim", "val_faces"} <= set(out)
    assert out["val_faces"] == 8  # two batches of 4
    assert "val_teacher_auc_balanced" in out and "val_teacher_nme" in out  # fan differs from teacher
    for v in out.values():
        assert isinstance(v, float | int)
    # an untouched copy of the teacher (before end-to-end) is not evaluated twice
    twin = TinyFAN()
    twin.load_state_dict(teacher.state_dict())
    out2 = validation_metrics(gen, twin, _batches(faces), cfg, teacher=teacher)
    assert "val_teacher_auc_balanced" not in out2 and out2["val_faces"] == 12
    # no FAN given: the teacher localises; cfg.data.val_samples caps the faces (mid-batch)
    capped = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_samples": 6})})
    out3 = validation_metrics(gen, None, _batches(faces), capped, teacher=teacher)
    assert out3["val_faces"] == 6


def test_validation_with_no_landmarks_at_all_gives_nan_auc(faces: dict) -> None:
    out = validation_metrics(None, TinyFAN(), _batches(faces, no_landmarks=tuple(range(12))), Config())
    assert out["val_faces"] == 12 and out["val_faces_landmarks"] == 0
    assert math.isnan(out["val_auc_balanced"]) and math.isnan(out["val_nme"])
    assert math.isfinite(out["val_psnr"])


def test_evaluate_models_writes_tables_json_and_figures(faces: dict, tmp_path: Path) -> None:
    cfg = Config()
    oracle = OracleFAN(faces)
    gen = TinyGenerator()
    methods = standard_methods(oracle, [("pixel", gen, None), ("end2end", TinyGenerator(), TinyFAN())])
    names = [m.name for m in methods]
    assert names == ["FAN-bilinear", "FAN-bicubic", "FAN-pixel", "FAN-end2end", "Super-FAN-end2end", "FAN-HR"]
    res = evaluate_models(methods, _batches(faces), cfg, tmp_path, samples=4, meta={"note": "test"})

    for f in (
        "results.json",
        "table1.md",
        "table2.md",
        "ced.png",
        "samples.png",
        "samples.npz",
        "per_face.npz",
    ):
        assert (tmp_path / f).is_file(), f
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["table2"] == res["table2"] and on_disk["meta"] == {"note": "test"}

    rows = {r["method"]: r for r in res["table2"]}
    assert set(rows) == set(names)
    assert rows["FAN-HR"]["auc"]["balanced"] > 0.97  # the upper bound row exists and the oracle is perfect
    assert rows["FAN-bilinear"]["auc"]["balanced"] > 0.97
    assert rows["Super-FAN-end2end"]["auc"]["balanced"] < 0.5  # a random FAN
    assert set(rows["FAN-HR"]["auc"]) == {"0_30", "30_60", "60_90", "balanced", "all"}
    assert [r["method"] for r in res["table1"]] == ["bilinear", "bicubic", "pixel", "end2end"]  # no HR row
    bil, bic = res["table1"][0], res["table1"][1]
    up = upsample_bilinear(faces["lr"]).clamp(0, 1)
    assert bil["psnr"]["all"] == pytest.approx(metrics.psnr(up, faces["hr"]).mean().item(), abs=1e-6)
    cubic = upsample_bicubic(faces["lr"])
    assert bic["psnr"]["all"] == pytest.approx(metrics.psnr(cubic, faces["hr"]).mean().item(), abs=1e-6)
    assert bil["grid_artefact"] == pytest.approx(metrics.grid_artefact(up, faces["hr"]), rel=1e-9)
    assert all(r["grid_artefact"] is not None for r in res["table1"])
    assert res["faces"]["all"] == 12 and res["faces"]["with_landmarks"]["all"] == 11
    assert res["faces"]["unknown_yaw"] == 1 and res["pose_sources"] == {"estimated": 12}
    assert len(res["ced"]["curves"]["FAN-HR"]) == len(res["ced"]["thresholds"])
    assert res["ced"]["curves"]["FAN-HR"][-1] == pytest.approx(1.0)

    t2 = (tmp_path / "table2.md").read_text()
    assert "| FAN-HR |" in t2 and "[0,30)" in t2 and "[60,90]" in t2 and "balanced" in t2 and "%" in t2
    t1 = (tmp_path / "table1.md").read_text()
    assert "| bilinear upsample (baseline) |" in t1 and "| bicubic upsample (baseline) |" in t1
    assert "grid artefact |" in t1.splitlines()[2]

    grid = Image.open(tmp_path / "samples.png")
    # columns: LR | FAN-bilinear | FAN-bicubic | FAN-pixel | FAN-end2end | Super-FAN-end2end | FAN-HR; 128 px tiles
    assert grid.size == (7 * 128, 14 + 4 * 128)
    with np.load(tmp_path / "samples.npz") as s:
        assert s["images"].shape == (4, 6, 3, 64, 64) and s["points"].shape == (4, 6, 68, 2)
        # round-robin over bins: the first three samples cover the three bins
        assert sorted(pose_bin(s["yaw"][:3]).tolist()) == [0, 1, 2]
    with np.load(tmp_path / "per_face.npz") as pf:
        assert np.isnan(pf["nme/FAN-HR"][3]) and pf["psnr/bilinear"].shape == (12,)
        assert pf["grid/HR"].shape == (12,) and pf["grid/bicubic"].shape == (12,)
    assert Image.open(tmp_path / "ced.png").size[0] > 300


def test_a_jaw_in_another_convention_shows_in_its_group_not_elsewhere(faces: dict, tmp_path: Path) -> None:
    """A FAN perfect everywhere but the jaw (8 px off, the size of a silhouette-vs-3D-contour jaw on a turned
    face): the jaw group carries the whole error, the other groups none, the 51-point AUC stays perfect."""
    shifted = dict(faces, landmarks=faces["landmarks"].clone())
    shifted["landmarks"][:, :17, 0] += 8.0
    jaw_off = OracleFAN(shifted)
    res = evaluate_models([Method("jaw-off", jaw_off, None, "hr")], _batches(faces), Config(), tmp_path, samples=0)
    row = res["table2"][0]
    assert row["auc_inner"]["all"] > 0.97 and row["auc"]["all"] < row["auc_inner"]["all"] - 0.1
    groups = row["nme_groups"]
    assert set(groups) == {"jaw", "brows", "nose", "eyes", "mouth"}
    assert groups["jaw"]["all"] > 0.1 and all(groups[g]["all"] < 0.01 for g in ("brows", "nose", "eyes", "mouth"))
    t2 = (tmp_path / "table2.md").read_text()
    assert "51 inner points" in t2 and "| Method | jaw | brows | nose | eyes | mouth |" in t2
    with np.load(tmp_path / "per_face.npz") as pf:
        assert pf["nme_jaw/jaw-off"].shape == (12,) and np.nanmax(pf["nme_inner/jaw-off"]) < 0.01


def test_evaluate_models_max_faces_and_empty_bin(faces: dict, tmp_path: Path) -> None:
    oracle = OracleFAN(faces)
    res = evaluate_models(standard_methods(oracle), _batches(faces), Config(), tmp_path, max_faces=3, samples=0)
    # faces 0..2: yaw 5, -12, 30 -> the 60-90 bin is empty: no value, "–" in the tables, not in balanced
    assert res["faces"]["all"] == 3
    row = {r["method"]: r for r in res["table2"]}["FAN-HR"]
    assert row["auc"]["60_90"] is None and row["auc"]["balanced"] > 0.97
    assert "–" in (tmp_path / "table2.md").read_text()
    assert not (tmp_path / "samples.png").exists()


def test_method_validation() -> None:
    with pytest.raises(ValueError):
        Method("FAN-x", TinyFAN(), None, "sr")
    fan = TinyFAN()
    with pytest.raises(ValueError):
        evaluate_models([Method("a", fan, None, "hr"), Method("a", fan, None, "bilinear")], [], Config())


def test_report_rerenders_from_json(faces: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "eval"
    evaluate_models(standard_methods(OracleFAN(faces)), _batches(faces), Config(), src, samples=2)
    capsys.readouterr()
    out = tmp_path / "again"
    assert cli_main(["report", str(src / "results.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Table 2" in printed and "| FAN-HR |" in printed
    for f in ("results.json", "table1.md", "table2.md", "ced.png", "samples.png", "samples.npz"):
        assert (out / f).is_file(), f
    assert (out / "table2.md").read_text() == (src / "table2.md").read_text()
    # not an evaluation file: one-line user error, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli_main(["report", str(bad)]) == 2
    assert "not a superfan evaluation" in capsys.readouterr().err


def _tiny_cfg() -> Config:
    from superfan.config import from_dict

    return from_dict(
        {
            "model": {
                "generator": {"layout": [1, 1, 1], "channels": 8},
                "fan": {"stacks": 1, "features": 16, "hourglass_depth": 2},
            }
        }
    )


def test_methods_from_checkpoints_builds_the_paper_rows(faces: dict, tmp_path: Path) -> None:
    from superfan import models
    from superfan.checkpoint import save_checkpoint
    from superfan.errors import UserError
    from superfan.evaluate import methods_from_checkpoints

    FAN, Generator = models.FAN, models.Generator  # noqa: N806

    cfg = _tiny_cfg()
    fan, gen = FAN.from_config(cfg.model.fan), Generator.from_config(cfg.model.generator)
    common = {"config": cfg.to_dict(), "critic": None, "epoch": 1, "global_epoch": 1, "step": 1}
    save_checkpoint(
        tmp_path / "t",
        {**common, "stage": "teacher", "stage_kind": "fan", "generator": None, "fan": fan.state_dict()},
    )
    for stage, kind in (("pixel", "pixel"), ("end2end", "end2end")):
        save_checkpoint(
            tmp_path / stage,
            {
                **common,
                "stage": stage,
                "stage_kind": kind,
                "generator": gen.state_dict(),
                "fan": fan.state_dict(),
            },
        )
    methods, meta = methods_from_checkpoints(str(tmp_path / "t"), [str(tmp_path / "pixel"), str(tmp_path / "end2end")])
    # rows named as the paper's: FAN-Ours-pixel, and for end2end the teacher on its image and its own FAN
    assert [m.name for m in methods] == [
        "FAN-bilinear",
        "FAN-bicubic",
        "FAN-Ours-pixel",
        "FAN-Super-FAN",
        "Super-FAN",
        "FAN-HR",
    ]
    assert [c["label"] for c in meta["checkpoints"]] == ["Ours-pixel", "Super-FAN"]
    res = evaluate_models(methods, _batches(faces), cfg, None, samples=0)
    assert len(res["table2"]) == 6
    assert [r["method"] for r in res["table1"]] == ["bilinear", "bicubic", "Ours-pixel", "Super-FAN"]
    # the same stage twice gets a unique label; a FAN checkpoint is not a method; missing paths fail clearly
    methods, _ = methods_from_checkpoints(str(tmp_path / "t"), [str(tmp_path / "pixel")] * 2)
    assert [m.name for m in methods][2:4] == ["FAN-Ours-pixel", "FAN-Ours-pixel#2"]
    with pytest.raises(UserError, match="holds no generator"):
        methods_from_checkpoints(str(tmp_path / "t"), [str(tmp_path / "t")])
    with pytest.raises(UserError, match="checkpoint.pt"):
        methods_from_checkpoints(str(tmp_path / "missing"), [])


def test_evaluate_cli_bad_teacher_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["evaluate", "--data", str(tmp_path / "x.tar"), "--fan", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert cli_main(["evaluate", "--data", "x", "--fan", "y", "--max-faces", "0"]) == 2


def test_evaluate_on_the_real_data_stream(tmp_path: Path) -> None:
    """Contract batches from ``make_loader`` over procedural-face shards go through the same protocol."""
    from shards.pack import PackOptions, pack
    from superfan.data.stream import make_loader

    pack(PackOptions(format="synthetic", src="12", dest=str(tmp_path / "shards"), split="val", seed=3, workers=1,
                     progress=False))  # fmt: skip
    cfg = Config()
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"batch_size": 5, "num_workers": 0})})
    url = str(tmp_path / "shards" / "manifest.json")
    seen = list(make_loader(url, cfg, train=False))
    bank = {k: torch.cat([b[k] for b in seen]) for k in ("hr", "landmarks")}
    assert len(bank["hr"]) == 12
    oracle = OracleFAN(bank)
    res = evaluate_models(standard_methods(oracle), make_loader(url, cfg, train=False), cfg, tmp_path / "out")
    rows = {r["method"]: r for r in res["table2"]}
    assert rows["FAN-HR"]["auc"]["all"] > 0.97
    assert res["faces"]["all"] == 12 and (tmp_path / "out" / "samples.png").is_file()


def test_variant_names_follow_the_paper() -> None:
    """Section 5's names from the stage kind, and from the loss weights that were actually on."""
    assert variant_name("pixel") == "Ours-pixel"
    assert variant_name("feature") == "Ours-pixel-feature"
    assert variant_name("heatmap") == "Ours-pixel-feature-heatmap"
    assert variant_name("gan") == "Ours-pixel-feature-heatmap-GAN"  # Table 2's FAN-Ours-pixel-feature-heatmap-GAN
    assert variant_name("end2end") == "Super-FAN"
    assert variant_name("fan") is None and variant_name(None) is None and variant_name("nonsense") is None
    cfg = Config()
    assert variant_name("end2end", cfg.losses) == "Super-FAN"
    cfg.losses.perceptual.weight = 0.0  # a heatmap stage without Eq. 2 is not the paper's variant
    assert variant_name("heatmap", cfg.losses) == "Ours-pixel-heatmap"
    assert variant_name("end2end", cfg.to_dict()["losses"]) == "Ours-pixel-heatmap-GAN-end2end"
    assert variant_name("feature", cfg.losses) == "Ours-pixel"


def test_bicubic_baseline_is_matlab_imresize_kernel() -> None:
    """Keys a = -0.5 (PIL BICUBIC, MATLAB imresize), the kernel degrade.downsample uses, clamped to [0, 1]."""
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(2, 3, 16, 16, generator=g)
    up = upsample_bicubic(lr)
    assert up.shape == (2, 3, 64, 64) and up.min() >= 0 and up.max() <= 1
    for c in range(3):
        ref = Image.fromarray(lr[0, c].numpy(), mode="F").resize((64, 64), Image.Resampling.BICUBIC)
        np.testing.assert_allclose(up[0, c].numpy(), np.asarray(ref).clip(0, 1), atol=1e-6)
