import csv
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.core.data import DataConfig, StepBatches, load
from genzoo.errors import DataError


def test_embedded_images_are_split_resized_and_in_range():
    train = load(DataConfig(name="fashion-mnist-1k", size=16), "train")
    test = load(DataConfig(name="fashion-mnist-1k", size=16), "test")
    assert len(train) == 900 and len(test) == 100
    # held as uint8 (a quarter of float32's memory); floats in [0, 1] only per batch on the device
    assert train.x.shape[1:] == (1, 16, 16) and train.x.dtype == torch.uint8
    batch = train.to_device(train.batch(torch.arange(8)), torch.device("cpu"))
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (8, 1, 16, 16)
    assert 0 <= float(batch["x"].min()) and float(batch["x"].max()) <= 1
    assert torch.equal(batch["x"], train.x[:8].float() / 255)
    assert train.classes[0] == "T-shirt/top" and train.y.max() == 9


def test_pad_adds_black_borders():
    data = load(DataConfig(name="mnist-5k", pad=2, limit=10))
    assert data.x.shape[1:] == (1, 32, 32)
    assert int(data.x[:, :, :2].max()) == 0 and int(data.x[:, :, :, -2:].max()) == 0


def test_crop_keeps_the_centre_and_to_source_frame_puts_it_back():
    whole = load(DataConfig(name="mnist-5k", limit=20))
    data = load(DataConfig(name="mnist-5k", crop=22, limit=20))
    assert data.shape == (1, 22, 22) and torch.equal(data.x, whole.x[..., 3:25, 3:25])
    back = data.to_source_frame(data.images())
    assert back.shape == (20, 1, 28, 28)
    assert torch.equal(back[..., 3:25, 3:25], data.images())  # same side: nothing resampled
    # the ring comes back as the cropped-away ring's mean: MNIST's border is nearly black
    assert float(back[..., :3, :].max()) == pytest.approx(data.frame.fill[0])
    assert 0 <= data.frame.fill[0] < 0.02
    # crop, then resize, then pad: the model's 18x18 frame maps back onto the 28x28 source
    small = load(DataConfig(name="mnist-5k", crop=22, size=16, pad=1, limit=20))
    assert small.shape == (1, 18, 18)
    assert small.to_source_frame(small.images()).shape == (20, 1, 28, 28)
    # an unchanged set is its own source frame
    assert whole.frame is None and torch.equal(whole.to_source_frame(whole.x), whole.images())
    with pytest.raises(DataError, match=r"crop must be 1\.\.28 \(the images are 28x28\), got 29"):
        load(DataConfig(name="mnist-5k", crop=29, limit=4))


def test_to_source_frame_strips_pad_and_leaves_a_plain_resize_to_the_judge():
    data = load(DataConfig(name="mnist-5k", pad=2, limit=10))
    assert torch.equal(data.to_source_frame(data.images()), data.images()[..., 2:30, 2:30])
    assert data.frame.describe() == "pad 2 undone"
    sized = load(DataConfig(name="mnist-5k", size=14, limit=10))
    assert sized.frame is None and torch.equal(sized.to_source_frame(sized.x), sized.images())


def test_twemoji_categories_are_attributes_and_channels_convert():
    data = load(DataConfig(name="twemoji", size=32, channels=1, label="Smileys & Emotion"))
    assert data.x.shape[1:] == (1, 32, 32)
    assert "Smileys & Emotion" in data.attribute_names
    assert set(data.y.unique().tolist()) == {0, 1}
    with pytest.raises(DataError, match="unknown attribute 'Smiling'; available: Activities"):
        load(DataConfig(name="twemoji", label="Smiling"))


def test_text_corpus_batches_are_shifted_windows():
    data = load(DataConfig(name="tinyshakespeare", seq_len=32))
    batch = data.batch(torch.tensor([0, 5]))["x"]
    assert batch.shape == (2, 33) and len(data.tokenizer) == 65
    # consecutive windows overlap by one token: row i's last target is row i+1's first input
    assert torch.equal(data.rows[0, -1], data.rows[1, 0])
    assert data.tokenizer.decode(data.rows[0].tolist()).startswith("First Citizen:")


def make_celeba_like(folder, n=12, size=(40, 48)):
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(folder / "img" / name)
        rows.append([name, "1" if i % 2 else "-1", "-1"])
    with open(folder / "list_attr_celeba.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image_id", "Smiling", "Blond_Hair"], *rows])


def test_folder_source_with_celeba_attributes_and_cache(tmp_path):
    make_celeba_like(tmp_path / "faces")
    cfg = DataConfig(name="folder", path=str(tmp_path / "faces"), size=32, label="Smiling",
                     test_fraction=0.25)
    data = load(cfg)
    assert data.x.shape == (9, 3, 32, 32)
    assert data.attribute_names == ["Smiling", "Blond_Hair"]
    assert data.classes == ["not Smiling", "Smiling"]
    cached = list((tmp_path / "data-root" / "cache").glob("*.npy"))
    assert len(cached) == 1
    assert torch.equal(load(cfg).x, data.x)  # second load comes from the cache


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(DataConfig(name="folder", path=str(tmp_path / "nothing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load(DataConfig(name="folder", path=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="needs a path"):
        load(DataConfig(name="folder"))


def test_torchvision_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="are you offline"):
        load(DataConfig(name="mnist", root=str(tmp_path)))
    with pytest.raises(DataError, match="download is off"):
        load(DataConfig(name="mnist", root=str(tmp_path), download=False))


def test_torchvision_reads_files_already_in_the_data_root(tmp_path):
    raw = tmp_path / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)

    def idx(name, magic, arr):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(header + arr.tobytes())
        (raw / name).write_bytes(header + arr.tobytes())

    for split in ("train", "t10k"):
        idx(f"{split}-images-idx3-ubyte", 2051, images)
        idx(f"{split}-labels-idx1-ubyte", 2049, np.arange(5, dtype=np.uint8))
    data = load(DataConfig(name="mnist", root=str(tmp_path), download=False, size=16))
    assert data.x.shape == (5, 1, 16, 16) and data.y.tolist() == [0, 1, 2, 3, 4]


def test_kaggle_source_uses_the_cache_without_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "kaggle" / "jessicali9530__celeba-dataset"
    make_celeba_like(folder / "img_align_celeba" / "img_align_celeba", n=6)
    (folder / ".complete").write_text("")
    data = load(DataConfig(name="celeba", root=str(tmp_path), size=16, label="Blond_Hair",
                           test_fraction=0.2))
    assert data.x.shape[1:] == (3, 16, 16)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    from genzoo.errors import CredentialsError
    with pytest.raises(CredentialsError, match="KAGGLE_USERNAME"):
        load(DataConfig(name="lego-bricks", root=str(tmp_path)))


def test_step_batches_are_a_pure_function_of_seed_and_step():
    data = load(DataConfig(name="mnist-5k", size=8))
    a, b = StepBatches(data, 32, seed=3), StepBatches(data, 32, seed=3)
    late = a(200)["x"]
    for s in range(5):
        b(s)
    assert torch.equal(b(200)["x"], late)
    assert not torch.equal(StepBatches(data, 32, seed=4)(200)["x"], late)
