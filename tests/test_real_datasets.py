"""DukeMTMC-reID and MSMT17 parsers, published-count warnings, image verification,
ImageNet weights and the PK sampler under a real two-process gloo group."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from reid_attn.config import ConfigError
from reid_attn.data import MSMT17, DatasetError, DukeMTMC, Market1501, PKSampler, ReIDDataModule
from reid_attn.models import ResNet50
from reid_attn.models.pretrained import PretrainedWeightsError, load_imagenet_weights
from reid_attn.train import train


def _jpeg(path: Path, colour=(120, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 64), colour).save(path)


def _market_like(root: Path, names: dict[str, list[str]]) -> Path:
    for folder, files in names.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            _jpeg(root / folder / name)
    return root


DUKE = {
    "bounding_box_train": ["0005_c1_f0000001.jpg", "0005_c8_f0000002.jpg", "0002_c3_f0000003.jpg"],
    "query": ["0011_c2_f0000004.jpg"],
    "bounding_box_test": ["0011_c7_f0000005.jpg", "0000_c1_f0000006.jpg", "-1_c2_f0000007.jpg"],
}


def test_duke_parser_relabels_and_reads_eight_cameras(tmp_path) -> None:
    data = DukeMTMC(_market_like(tmp_path, DUKE), verbose=False, check_counts=False)
    assert sorted((Path(p).name, pid, cam) for p, pid, cam in data.train) == [
        ("0002_c3_f0000003.jpg", 0, 2),
        ("0005_c1_f0000001.jpg", 1, 0),
        ("0005_c8_f0000002.jpg", 1, 7),
    ]
    assert [(pid, cam) for _, pid, cam in data.query] == [(11, 1)]
    assert sorted((pid, cam) for _, pid, cam in data.gallery) == [(0, 0), (11, 6)]  # junk dropped


def test_duke_camera_out_of_range(tmp_path) -> None:
    names = {**DUKE, "query": ["0011_c9_f0000004.jpg"]}
    with pytest.raises(DatasetError, match=r"camera 9 .* out of range 1\.\.8"):
        DukeMTMC(_market_like(tmp_path, names), verbose=False)


def test_published_counts_mismatch_warns(tmp_path) -> None:
    root = _market_like(tmp_path, DUKE)
    with pytest.warns(
        UserWarning,
        match="dukemtmc train split: found 2 ids / 3 images, published 702 ids / 16522 images",
    ):
        DukeMTMC(root, verbose=False)


def test_published_counts_match_is_silent(tmp_path, monkeypatch) -> None:
    root = _market_like(
        tmp_path,
        {
            "bounding_box_train": ["0001_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg"],
            "query": ["0003_c1s1_000003_00.jpg"],
            "bounding_box_test": ["0003_c2s1_000004_00.jpg", "-1_c1s1_000005_00.jpg"],
        },
    )
    monkeypatch.setattr(
        Market1501, "published", {"train": (2, 2), "query": (1, 1), "gallery": (None, 1)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Market1501(root, verbose=False)


def _msmt(root: Path, train_dir: str, test_dir: str) -> Path:
    lists = {
        "list_train.txt": (
            train_dir,
            [
                "0000/0000_000_01_0303morning_0015_0.jpg 0",
                "0000/0000_001_05_0303morning_0016_0.jpg 0",
            ],
        ),
        "list_val.txt": (train_dir, ["0007/0007_000_15_0303noon_0001_0.jpg 7"]),
        "list_query.txt": (test_dir, ["0003/0003_000_02_0303morning_0008_0.jpg 3"]),
        "list_gallery.txt": (
            test_dir,
            [
                "0003/0003_004_11_0303morning_0009_0.jpg 3",
                "0004/0004_000_02_0303morning_0010_0.jpg 4",
            ],
        ),
    }
    for list_name, (folder, lines) in lists.items():
        for line in lines:
            _jpeg(root / folder / line.split()[0])
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(
    ("train_dir", "test_dir"), [("train", "test"), ("mask_train_v2", "mask_test_v2")]
)
def test_msmt17_v1_and_v2_layouts(tmp_path, train_dir, test_dir) -> None:
    data = MSMT17(_msmt(tmp_path, train_dir, test_dir), verbose=False, check_counts=False)
    assert [(pid, cam) for _, pid, cam in data.train] == [(0, 0), (0, 4), (1, 14)]
    assert all(f"/{train_dir}/" in p for p, _, _ in data.train)
    assert [(pid, cam) for _, pid, cam in data.query] == [(3, 1)]
    assert [(pid, cam) for _, pid, cam in data.gallery] == [(3, 10), (4, 1)]
    assert all(f"/{test_dir}/" in p for p, _, _ in data.query + data.gallery)


def test_msmt17_errors(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"(?s)does not exist.*list_train.txt"):
        MSMT17(tmp_path / "none", verbose=False)
    root = _msmt(tmp_path, "train", "test")
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"is not a msmt17 folder: missing list_val.txt"):
        MSMT17(root, verbose=False)
    (root / "list_val.txt").write_text("0007/garbage.jpg seven\n")
    with pytest.raises(DatasetError, match=r"cannot parse line 1 of .*list_val.txt"):
        MSMT17(root, verbose=False)


def test_verify_images_finds_a_corrupt_file_up_front(tmp_path) -> None:
    root = _market_like(
        tmp_path / "m",
        {
            "bounding_box_train": [
                f"{p:04d}_c{c}s1_00000{c}_00.jpg" for p in (1, 2) for c in (1, 2)
            ],
            "query": ["0003_c1s1_000003_00.jpg"],
            "bounding_box_test": ["0003_c2s1_000004_00.jpg"],
        },
    )
    bad = root / "bounding_box_test" / "0003_c2s1_000004_00.jpg"
    bad.write_bytes(b"not a jpeg at all")
    module = ReIDDataModule(
        name="market1501", root=str(root), num_identities=2, num_workers=0, verify_images=True
    )
    with pytest.warns(UserWarning, match="published"), pytest.raises(DatasetError, match=str(bad)):
        module.setup()


def test_imagenet_weights_load_with_only_attention_missing(fake_imagenet_weights) -> None:
    backbone = ResNet50("cbam")
    report = load_imagenet_weights(backbone, fake_imagenet_weights)
    assert report["missing"] and all(".attn." in k for k in report["missing"])
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    saved = torch.load(fake_imagenet_weights, weights_only=True)
    ours = backbone.state_dict()
    for key, value in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(ours[key], value), key


def test_imagenet_weights_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        PretrainedWeightsError,
        match=r"not found at .*torch/hub/checkpoints/"
        r"resnet50-0676ba61.pth.*model.pretrained_path",
    ):
        load_imagenet_weights(ResNet50("none"))
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    with pytest.raises(PretrainedWeightsError, match="not a torchvision ResNet50 state dict"):
        load_imagenet_weights(ResNet50("none"), foreign)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x00" * 10)
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        load_imagenet_weights(ResNet50("none"), broken)


def test_train_with_pretrained_path(train_cfg_factory, fake_imagenet_weights, capsys) -> None:
    cfg = train_cfg_factory(
        "model.pretrained=imagenet", f"model.pretrained_path={fake_imagenet_weights}"
    )
    train(cfg)
    assert "loaded ImageNet weights: 80 attention tensors" in capsys.readouterr().out


def test_unknown_pretrained_name(train_cfg_factory) -> None:
    with pytest.raises(
        ConfigError, match=r"model.pretrained='imagenet21k' .* allowed values: imagenet"
    ):
        train(train_cfg_factory("model.pretrained=imagenet21k"))


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    pids = [i % 9 for i in range(60)]
    sampler = PKSampler(pids, num_identities=3, num_instances=2, seed=5)  # rank from the group
    sampler.set_epoch(2)
    torch.save(
        {"rank": sampler.rank, "world": sampler.world_size, "indices": list(sampler)},
        Path(out_dir) / f"rank{rank}.pt",
    )
    # both ranks leave together: a rank that tears its group down while the other is still
    # connecting makes that one fail ("Gloo connectFullMesh failed ... closed by peer", seen
    # once in a suite run on a loaded machine)
    dist.barrier()
    dist.destroy_process_group()


def test_pk_sampler_in_a_real_two_process_gloo_group(tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    shares = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(s["rank"], s["world"]) for s in shares] == [(0, 2), (1, 2)]
    assert len(shares[0]["indices"]) == len(shares[1]["indices"]) > 0
    reference = PKSampler([i % 9 for i in range(60)], 3, 2, seed=5, rank=0, world_size=1)
    reference.set_epoch(2)
    batches = reference.global_batches()
    for rank, share in enumerate(shares):
        expected = [int(i) for b in batches[rank : len(batches) // 2 * 2 : 2] for i in b]
        assert share["indices"] == expected
