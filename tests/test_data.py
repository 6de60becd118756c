"""Data layer: local real datasets, datasets streaming, robust decoding, sharding, reproducible augmentation."""

from __future__ import annotations

import hashlib
import importlib.util
import io
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from mergevq_hf.image_utils import pil_to_tensor
from mergevq_hf.testing import PHOTO_NAMES, build_local_dataset
from mergevq_hf.training.data import (
    DataConfig,
    RobustImageStream,
    decode_image,
    load_image_stream,
    make_dataloader,
    open_image,
    strong_augment,
)

pytest.importorskip("skimage")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
# One shard read at a time: no reader threads, no 5 s pause per parquet pass (datasets 5.x); the default is
# exercised once in test_sharding_with_seed_default_shuffle.
FAST = {"shuffle_input_shards": 1}


@pytest.fixture(scope="module")
def photos_parquet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photos")
    counts = build_local_dataset("photos", out, size=SIZE, num_per_image=4, format="parquet", num_shards=2)
    assert counts == {"train": 30, "test": 10}  # 10 photos x 4 crops, ceil(0.1 * 4) = 1 per photo held out
    return out


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    counts = build_local_dataset("digits", out, size=SIZE, num_per_image=6, format="imagefolder")
    assert counts == {"train": 50, "test": 10}
    return out


def _config(dataset: Path, **kwargs) -> DataConfig:
    base = {"dataset": str(dataset), "resolution": SIZE, "aug_resolution": 12, "shuffle_buffer": 8, **FAST}
    return DataConfig(**{**base, **kwargs})


def _raw_id(example: dict) -> str:
    value = example["image"]
    if value.get("bytes"):
        return hashlib.sha1(value["bytes"]).hexdigest()
    return Path(value["path"]).name


def _encode(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _noise(mode: str, size: int = 20, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size, size)).astype(np.uint16))
    return rgb.convert(mode)


# ------------------------------------------------------------------------------------------------ the builder


def test_build_local_dataset_layouts(photos_parquet, digits_folder, tmp_path):
    assert sorted(p.name for p in (photos_parquet / "data").iterdir()) == [
        "test-00000-of-00002.parquet",
        "test-00001-of-00002.parquet",
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    table = datasets.load_dataset("parquet", data_dir=str(photos_parquet), split="train")
    assert table.features["label"].names == list(PHOTO_NAMES)
    assert sorted(table["label"]) == sorted(list(range(10)) * 3)
    first = table[0]["image"]
    assert first.size == (SIZE, SIZE) and first.mode == "RGB"
    assert np.asarray(first).std() > 1  # a real photo crop, not a flat image

    classes = sorted(p.name for p in (digits_folder / "train").iterdir())
    assert classes == [f"{d:03d}_digit_{d}" for d in range(10)]
    assert sum(1 for _ in (digits_folder / "test").rglob("*.png")) == 10
    with Image.open(next((digits_folder / "train" / "003_digit_3").iterdir())) as digit:
        assert digit.size == (SIZE, SIZE) and digit.mode == "L"

    with pytest.raises(FileExistsError, match="not empty"):
        build_local_dataset("digits", digits_folder, size=SIZE, format="imagefolder")
    with pytest.raises(ValueError, match="kind must be one of"):
        build_local_dataset("faces", tmp_path / "x")
    with pytest.raises(ValueError, match="format must be one of"):
        build_local_dataset("digits", tmp_path / "x", format="tfrecord")
    with pytest.raises(ValueError, match="holdout_fraction"):
        build_local_dataset("digits", tmp_path / "x", holdout_fraction=1.0)


def test_builder_is_deterministic_and_overwrites(tmp_path):
    a = build_local_dataset("digits", tmp_path / "a", size=8, num_per_image=3, seed=1, holdout_fraction=0.0)
    b = build_local_dataset("digits", tmp_path / "b", size=8, num_per_image=3, seed=1, holdout_fraction=0.0)
    assert a == b == {"train": 30}
    read = lambda p: (p / "data" / "train-00000-of-00001.parquet").read_bytes()  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b")
    counts = build_local_dataset("digits", tmp_path / "a", size=8, num_per_image=2, overwrite=True)
    assert counts == {"train": 10, "test": 10}  # ceil(0.1 * 2) = 1 of each digit held out
    assert len(datasets.load_dataset("parquet", data_dir=str(tmp_path / "a"), split="train")) == 10


def test_example_script(tmp_path):
    spec = importlib.util.spec_from_file_location("make_local_dataset", REPO / "examples" / "make_local_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "photos"
    module.main(["--kind", "photos", "--output", str(out), "--size", "8", "--num-per-image", "2"])
    module.main(["--kind", "photos", "--output", str(out), "--size", "8", "--num-per-image", "1", "--overwrite"])
    stream = load_image_stream(DataConfig(dataset=str(out), shuffle=False))
    assert sorted(example["label"] for example in stream) == list(range(10))
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00001.parquet"
    ]  # one crop per photo, nothing held out: no test split written


# ------------------------------------------------------------------------------------------------ the stream


@pytest.mark.parametrize("which", ["photos_parquet", "digits_folder"])
def test_stream_shapes_ranges_labels(which, request):
    folder = request.getfixturevalue(which)
    for split, count in (("train", 50 if which == "digits_folder" else 30), ("test", 10)):
        config = _config(folder, split=split)
        raw = load_image_stream(config)
        assert raw.features["image"] == datasets.Image(decode=False)
        stream = RobustImageStream(raw, config)
        examples = list(stream)
        assert len(examples) == count
        for example in examples:
            assert set(example) == {"pixel_values", "view_weak", "view_strong", "label"}
            assert example["pixel_values"].shape == (3, SIZE, SIZE)
            assert example["view_weak"].shape == example["view_strong"].shape == (3, 12, 12)
            for key in ("pixel_values", "view_weak", "view_strong"):
                value = example[key]
                assert value.dtype == torch.float32 and torch.isfinite(value).all()
                assert value.min() >= -1 and value.max() <= 1
        labels = [example["label"] for example in examples]
        assert sorted(set(labels)) == list(range(10))
        stats = stream.stats
        assert stats["seen"] == stats["yielded"] == count and stats["skipped_corrupt"] == 0
        assert stats["converted_mode"] == ({"L": count} if which == "digits_folder" else {})


def test_center_crop_gives_the_stored_pixels(photos_parquet):
    """crop='center', no flip, same size: pixel_values are exactly the stored image, labels in stored order."""
    config = _config(photos_parquet, shuffle=False, crop="center", random_flip=False, alignment_views=False)
    examples = list(RobustImageStream(load_image_stream(config), config))
    reference = datasets.load_dataset("parquet", data_dir=str(photos_parquet), split="train")
    assert [e["label"] for e in examples] == reference["label"]
    for example, row in zip(examples, reference):
        assert set(example) == {"pixel_values", "label"}
        torch.testing.assert_close(example["pixel_values"], pil_to_tensor(row["image"]), rtol=0, atol=0)


def test_dataloader_batches_default_collate(digits_folder):
    loader = make_dataloader(_config(digits_folder), batch_size=8)
    batches = list(loader)
    assert [len(b["label"]) for b in batches] == [8] * 6 + [2]
    batch = batches[0]
    assert batch["pixel_values"].shape == (8, 3, SIZE, SIZE) and batch["view_strong"].shape == (8, 3, 12, 12)
    assert batch["label"].dtype == torch.long
    assert loader.dataset.stats["yielded"] == 50


def test_dataloader_workers_cover_a_single_shard_stream(digits_folder):
    """An imagefolder streams as one shard: both workers must still get (different) examples."""
    loader = make_dataloader(_config(digits_folder, shuffle=False), batch_size=5, num_workers=2)
    labels = sorted(torch.cat([b["label"] for b in loader]).tolist())
    assert labels == sorted([d for d in range(10) for _ in range(5)])


# ------------------------------------------------------------------------------------------ robust decoding


def _messy_examples() -> list[tuple[str, bytes]]:
    good = _encode(_noise("RGB", seed=1))
    truncated = _encode(_noise("RGB", size=64, seed=2), "JPEG")
    return [
        ("00_rgb.png", good),
        ("01_truncated.jpg", truncated[: len(truncated) // 2]),
        ("02_gray.png", _encode(_noise("L", seed=3))),
        ("03_cmyk.jpg", _encode(_noise("CMYK", seed=4), "JPEG")),
        ("04_garbage.png", b"this is not an image at all"),
        ("05_palette.png", _encode(_noise("P", seed=5))),
        ("06_rgba.png", _encode(_noise("RGBA", seed=6))),
        ("07_16bit.png", _encode(_noise("I;16", seed=7))),
        ("08_rgb.png", good),
    ]


@pytest.mark.parametrize("format", ["parquet", "imagefolder"])
def test_corrupt_skipped_odd_modes_converted(format, tmp_path):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    messy = _messy_examples()
    if format == "parquet":
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
        rows = {"image": [{"bytes": data, "path": name} for name, data in messy], "label": list(range(len(messy)))}
        table = datasets.Dataset.from_dict(rows, features=features)
        (tmp_path / "data").mkdir()
        table.to_parquet(str(tmp_path / "data" / "train.parquet"))
        label_column = "label"
    else:
        for name, data in messy:
            (tmp_path / name).write_bytes(data)
        label_column = None  # flat folder: no class subfolders, no labels
    config = _config(tmp_path, shuffle=False, label_column=label_column)
    stream = RobustImageStream(load_image_stream(config), config)
    examples = list(stream)
    assert len(examples) == 7
    assert [e["label"] for e in examples] == ([0, 2, 3, 5, 6, 7, 8] if format == "parquet" else [-1] * 7)
    for example in examples:
        assert example["pixel_values"].shape == (3, SIZE, SIZE)
        assert example["pixel_values"].abs().max() <= 1
    assert stream.stats == {
        "seen": 9,
        "yielded": 7,
        "skipped_corrupt": 2,
        "skipped_too_large": 0,
        "skipped_missing": 0,
        "converted_mode": {"L": 1, "CMYK": 1, "P": 1, "RGBA": 1, "I;16": 1},
    }
    # the pixel guard reads the header only: the truncated 64x64 JPEG now counts as too large, the garbage as corrupt
    small = _config(tmp_path, shuffle=False, label_column=label_column, max_image_pixels=399)
    guarded = RobustImageStream(load_image_stream(small), small)
    assert list(guarded) == [] and guarded.stats["skipped_too_large"] == 8 and guarded.stats["skipped_corrupt"] == 1


def test_missing_images_are_skipped_and_wrong_types_raise():
    config = DataConfig(resolution=8, alignment_views=False)
    good = {"bytes": _encode(_noise("RGB")), "path": None}
    rows = [{"image": None, "label": 1}, {"image": {"bytes": None, "path": None}, "label": 2}, {"image": good}]
    stream = RobustImageStream(rows, config)
    examples = list(stream)
    assert len(examples) == 1 and examples[0]["label"] == -1  # no label value: -1
    assert stream.stats["skipped_missing"] == 2 and stream.stats["yielded"] == 1
    with pytest.raises(TypeError, match="cannot decode an image from int"):
        list(RobustImageStream([{"image": 5, "label": 0}], config))
    with pytest.raises(TypeError, match="label column 'label' must hold ints"):
        list(RobustImageStream([{"image": good, "label": "cat"}], config))


def test_decode_image_inputs(tmp_path):
    image = _noise("CMYK", seed=3)
    data = _encode(image, "JPEG")
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for value in (data, {"bytes": data, "path": None}, {"bytes": None, "path": str(path)}, str(path), path):
        decoded = decode_image(value)
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected)
    assert open_image(data).mode == "CMYK"
    assert decode_image(_noise("LA")).mode == "RGB"
    with pytest.raises(TypeError, match="cannot decode an image from int"):
        decode_image(3)
    with pytest.raises(OSError):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ValueError, match="max_image_pixels"):
        decode_image(data, max_image_pixels=10)


# --------------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("which", ["photos_parquet", "digits_folder"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_two_processes_get_disjoint_covering_shards(which, shuffle, request):
    folder = request.getfixturevalue(which)
    config = _config(folder, shuffle=shuffle, seed=3)
    everything = [_raw_id(e) for e in load_image_stream(config)]
    assert len(set(everything)) == len(everything)
    parts = [[_raw_id(e) for e in load_image_stream(config, rank, 2)] for rank in range(2)]
    assert parts[0] and parts[1]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything)


@pytest.mark.slow  # ~10 s: datasets 5.x pauses 5 s after each pass of its threaded parquet shard reader
def test_sharding_with_seed_default_shuffle(photos_parquet):
    config = DataConfig(dataset=str(photos_parquet), seed=5, shuffle_buffer=8)  # datasets' threaded shard reader
    parts = [[_raw_id(e) for e in load_image_stream(config, rank, 2)] for rank in range(2)]
    assert len(parts[0]) == len(parts[1]) == 15  # 2 parquet shards: one per process
    assert not set(parts[0]) & set(parts[1])
    assert len(set(parts[0]) | set(parts[1])) == 30


def test_make_dataloader_per_process(digits_folder):
    labels = []
    for rank in range(2):
        loader = make_dataloader(_config(digits_folder, seed=1), batch_size=4, process_index=rank, num_processes=2)
        labels += torch.cat([b["label"] for b in loader]).tolist()
    assert sorted(labels) == sorted([d for d in range(10) for _ in range(5)])


# ----------------------------------------------------------------------------------------- reproducibility


def _batches(config: DataConfig, **kwargs) -> list[dict[str, torch.Tensor]]:
    return list(make_dataloader(config, batch_size=10, **kwargs))


def test_same_seed_same_batches_other_seed_other_augmentation(photos_parquet):
    first = _batches(_config(photos_parquet, seed=7))
    second = _batches(_config(photos_parquet, seed=7))
    assert len(first) == len(second) == 3
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key

    # same order (no shuffle), different seed: same labels, different crops / flips / colour
    x = _batches(_config(photos_parquet, seed=7, shuffle=False))
    y = _batches(_config(photos_parquet, seed=8, shuffle=False))
    for a, b in zip(x, y):
        assert torch.equal(a["label"], b["label"])
        for key in ("pixel_values", "view_weak", "view_strong"):
            assert not torch.equal(a[key], b[key]), key
    # other process, other epoch: other augmentation of the same example
    config = _config(photos_parquet, seed=7, shuffle=False)
    stream = RobustImageStream(load_image_stream(config), config)
    epoch0 = next(iter(stream))["pixel_values"]
    stream.set_epoch(1)
    assert not torch.equal(epoch0, next(iter(stream))["pixel_values"])
    other = RobustImageStream(load_image_stream(config), config, process_index=1, num_processes=2)
    assert not torch.equal(epoch0, next(iter(other))["pixel_values"])


def test_strong_augment_stays_in_range_and_changes_pixels():
    x = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    outs = [strong_augment(x, generator, jitter_p=1, grayscale_p=1, blur_p=1, solarize_p=0) for _ in range(3)]
    for out in outs:
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])  # grayscale
        assert out.std() < x.std()  # blurred
    same = strong_augment(x, generator, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    assert torch.equal(same, x)


# -------------------------------------------------------------------------------------------- bad configuration


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"resolution": 0}, ValueError, "resolution must be an int >= 1, got 0"),
        ({"aug_resolution": 22.5}, ValueError, "aug_resolution must be an int"),
        ({"crop": "random"}, ValueError, r"crop must be one of \('random_resized', 'center'\), got 'random'"),
        ({"crop_scale": (0.5, 2.0)}, ValueError, r"crop_scale must be a pair .* got \(0.5, 2.0\)"),
        ({"crop_ratio": (2.0, 1.0)}, ValueError, "crop_ratio must be a pair"),
        ({"shuffle_buffer": 0}, ValueError, "shuffle_buffer must be an int >= 1, got 0"),
        ({"streaming": "yes"}, TypeError, "streaming must be a bool"),
        ({"label_column": ""}, TypeError, "label_column must be a non-empty str or None"),
        ({"max_image_pixels": -5}, ValueError, "max_image_pixels must be an int >= 1, got -5"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
    ],
)
def test_bad_config_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        DataConfig(**kwargs)


def test_bad_dataset_arguments(digits_folder, tmp_path):
    with pytest.raises(ValueError, match="looks like a local path but does not exist"):
        load_image_stream(DataConfig(dataset=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"no column\(s\) \['caption'\].*available: \['image', 'label'\]"):
        load_image_stream(_config(digits_folder, label_column="caption"))
    with pytest.raises(ValueError, match=r"process_index must be an int in \[0, 2\), got 2"):
        load_image_stream(_config(digits_folder), process_index=2, num_processes=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        make_dataloader(_config(digits_folder), batch_size=0)
    with pytest.raises(TypeError, match="config must be a DataConfig"):
        RobustImageStream([], {"dataset": "x"})
    not_image = tmp_path / "labels.txt"
    not_image.write_text("1\n")
    with pytest.raises(ValueError, match="only a single .parquet file"):
        load_image_stream(DataConfig(dataset=str(not_image)))
