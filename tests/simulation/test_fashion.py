"""The fashion-mnist track: Debian's IDX files read exactly, a clear message when they are absent,
and a short run of the pretrained track end to end."""

import gzip
import json

import numpy as np
import pytest

from ml_backend.simulation import runner as simulate
from ml_backend.simulation.datasets import FASHION_MNIST_DIR, fashion_mnist, read_idx


def _write_idx(path, array, compress=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def test_idx_files_are_read_exactly(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, compress=False)  # plain files work too
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 10)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 10)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), train)
    ds = fashion_mnist(tmp_path, size=40)
    assert ds.target.x.shape == (40, 3, 28, 28) and ds.source is None and len(ds.target.classes) == 10
    # [-1, 1] like every track; a pixel of 255 is 1.0
    assert float(ds.target.x.max()) <= 1.0 and float(ds.target.x.min()) >= -1.0
    assert sorted(ds.target.y.tolist()) == sorted([i % 10 for i in range(30)] + [i % 10 for i in range(10)])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + (99).to_bytes(4, "big")))
    with pytest.raises(ValueError, match="header says \\(99,\\), the file holds 0 values"):
        fashion_mnist(tmp_path, size=40)


def test_absent_dataset_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr("ml_backend.simulation.datasets.FASHION_MNIST_DIR", tmp_path)
    assert (
        simulate.main(
            [
                "--dataset",
                "fashion-mnist",
                "--seeds",
                "1",
                "--rounds",
                "1",
                "--no-progress",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup_env.sh installs it)",
)
def test_pretrained_track_runs_end_to_end(tmp_path):
    out = tmp_path / "o"
    assert (
        simulate.main(
            [
                "--dataset",
                "fashion-mnist",
                "--strategies",
                "random,margin",
                "--seeds",
                "1",
                "--rounds",
                "1",
                "--image-size",
                "32",
                "--steps",
                "5",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert (cfg["backbone"], cfg["weights"], cfg["freeze"], cfg["image_size"]) == (
        "efficientnet_lite0",
        "DEFAULT",
        "blocks.5",
        32,
    )
    assert {r["strategy"] for r in results["runs"]} == {"random", "margin"}
    assert all(len(r["rounds"]) == 2 and r["rounds"][-1]["labels"] == 20 for r in results["runs"])
    assert "FREEZE `blocks.5`, 32 px" in (out / "summary.md").read_text()


def test_an_imbalanced_image_folder_is_made_from_fashion_mnist(tmp_path):
    """make_imagefolder: the geometric profile, images drawn without replacement, a track that runs."""
    from ml_backend.imagefolder import image_folder_files
    from ml_backend.simulation.make_imagefolder import class_counts, main

    counts = class_counts(10, 500, 10)
    assert counts[0] == 500 and counts[-1] == 50 and counts[4] == 180  # 500 · 10^(-4/9) = 179.6
    assert all(a > b for a, b in zip(counts, counts[1:]))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (400, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:300])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[300:])
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(300) % 10)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(100) % 10)
    out = tmp_path / "lt"
    assert main([str(out), "--largest", "30", "--ratio", "10", "--fashion-mnist", str(tmp_path)]) == 0
    files, ys, classes = image_folder_files(out)
    wanted = json.loads((out / "counts.json").read_text())["counts"]
    assert list(wanted.values()) == class_counts(10, 30, 10)
    assert np.bincount(ys).tolist() == [wanted[c] for c in classes]
    assert max(np.bincount(ys)) / min(np.bincount(ys)) == 10 and len({f.name for f in files}) == len(files)
    assert main([str(out), "--fashion-mnist", str(tmp_path)]) == 2  # never writes into a used folder
    assert (
        simulate.main(
            [
                "--dataset",
                f"imagefolder:{out}",
                "--strategies",
                "random,auto",
                "--seeds",
                "1",
                "--rounds",
                "1",
                "--steps",
                "2",
                "--no-progress",
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )


def test_the_demo_images_are_fashion_mnist_photos_when_installed(tmp_path):
    import io

    from PIL import Image

    from ml_backend.demo.sample_data import fashion_available, fashion_pngs

    assert not fashion_available(tmp_path)
    rng = np.random.default_rng(2)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    assert fashion_available(tmp_path)
    images = fashion_pngs(5, size=112, seed=0, folder=tmp_path)
    assert len({name for name, _, _ in images}) == 5
    name, png, label = images[0]
    assert Image.open(io.BytesIO(png)).size == (112, 112) and label.lower().replace("/", "-").replace(" ", "-") in name
