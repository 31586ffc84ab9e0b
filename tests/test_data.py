import numpy as np
import pytest
import torch
from PIL import Image

from re_analysis import ReAnalysisError, load_dataset
from re_analysis.data import default_image_size, list_datasets, materialize
from re_analysis.data.digits import FASHION_DEFAULT_ROOT


def labels_of(ds):
    return materialize(ds)[1]


def test_mnist5k_splits_are_real_disjoint_and_seeded():
    s = load_dataset("mnist5k", seed=0)
    assert (s.num_classes, s.num_public_classes, s.channels, s.image_size) == (5, 5, 1, 28)
    assert len(s.private_train) + len(s.private_test) == 2500 and len(s.public) == 2500
    assert len(s.private_test) == 250  # 10% per class, stratified
    assert torch.bincount(labels_of(s.private_test)).tolist() == [50] * 5
    assert s.private_class_names == ["0", "1", "2", "3", "4"] and s.public_class_names == ["5", "6", "7", "8", "9"]
    x, _ = s.private_train[0]
    assert x.shape == (1, 28, 28) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    # real digits: mean ink coverage of MNIST is about 13%
    imgs, _ = materialize(s.private_train)
    assert 0.08 < imgs.float().div(255).mean() < 0.2
    # no image is in both the private and public split (class-disjoint by construction)
    pub, _ = materialize(s.public)
    priv = {bytes(a.numpy()) for a in imgs[:300]}
    assert not priv & {bytes(a.numpy()) for a in pub}
    same = load_dataset("mnist5k", seed=0)
    other = load_dataset("mnist5k", seed=1)
    assert torch.equal(materialize(same.private_test)[0], materialize(s.private_test)[0])
    assert not torch.equal(materialize(other.private_test)[0], materialize(s.private_test)[0])


def test_resize_and_registry():
    s = load_dataset("mnist5k", image_size=32)
    assert s.image_size == 32 and s.private_train[0][0].shape == (1, 32, 32)
    assert {"mnist5k", "fashion-mnist", "celeba", "facescrub", "stanford-dogs", "imagefolder"} <= set(list_datasets())
    assert default_image_size("stanford-dogs") == 224
    with pytest.raises(ReAnalysisError, match="unknown dataset 'mnist'.*mnist5k"):
        load_dataset("mnist")


@pytest.mark.skipif(not (__import__("pathlib").Path(FASHION_DEFAULT_ROOT).is_dir()),
                    reason="Debian package dataset-fashion-mnist not installed (.ci/run installs it)")
def test_fashion_mnist_from_debian_package():
    s = load_dataset("fashion-mnist", max_per_class=300)
    assert s.num_classes == 5 and len(s.public) == 1500 and len(s.private_train) == 1350
    assert s.private_class_names[0] == "t-shirt"
    full = load_dataset("fashion-mnist")
    assert len(full.private_train) + len(full.private_test) + len(full.public) == 70000


def test_missing_folders_say_what_where_and_how(tmp_path):
    with pytest.raises(ReAnalysisError, match=r"does not exist; install Debian's package `dataset-fashion-mnist`"):
        load_dataset("fashion-mnist", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReAnalysisError, match=r"train-images-idx3-ubyte\(\.gz\) not found in .*empty"):
        load_dataset("fashion-mnist", root=tmp_path / "empty")
    with pytest.raises(ReAnalysisError, match="celeba needs --root"):
        load_dataset("celeba")
    with pytest.raises(ReAnalysisError, match="identity_CelebA.txt is missing"):
        load_dataset("celeba", root=tmp_path / "empty")
    with pytest.raises(ReAnalysisError, match="found 0 class folders"):
        load_dataset("imagefolder", root=tmp_path / "empty")


def write_tree(root, counts, size=20):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_imagefolder_private_is_the_largest_classes(tmp_path):
    write_tree(tmp_path, {"a": 3, "b": 12, "c": 10, "d": 4})
    s = load_dataset("imagefolder", root=tmp_path, image_size=16)
    assert s.private_class_names == ["b", "c"] and s.public_class_names == ["d", "a"]
    x, y = s.private_train[0]
    assert x.shape == (3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert len(s.private_train) + len(s.private_test) == 22 and len(s.public) == 7
    assert len(s.private_test) == 2


def test_facescrub_and_stanford_dogs_layouts(tmp_path):
    write_tree(tmp_path / "fs" / "actors" / "faces", {"Al_Pacino": 4, "Tom_Hanks": 3})
    write_tree(tmp_path / "fs" / "actresses" / "faces", {"Meryl_Streep": 5, "Emma_Stone": 2})
    s = load_dataset("facescrub", root=tmp_path / "fs", image_size=16)
    assert s.num_classes + s.num_public_classes == 4 and s.private_class_names[0] == "Meryl_Streep"
    write_tree(tmp_path / "dogs" / "Images", {"n02085620-Chihuahua": 3, "n02085782-Japanese_spaniel": 2})
    d = load_dataset("stanford-dogs", root=tmp_path / "dogs", image_size=32)
    assert d.private_class_names == ["n02085620-Chihuahua"] and d.private_train[0][0].shape == (3, 32, 32)


def test_celeba_private_is_the_most_frequent_identities(tmp_path):
    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows, k = [], 0
    for pid, n in ((7, 5), (3, 2), (9, 4), (1, 1)):
        for _ in range(n):
            name = f"{k:06d}.jpg"
            Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(base / "img_align_celeba" / name)
            rows.append(f"{name} {pid}")
            k += 1
    (base / "identity_CelebA.txt").write_text("\n".join(rows) + "\n")
    s = load_dataset("celeba", root=tmp_path, num_private=2)
    assert s.private_class_names == ["7", "9"] and s.public_class_names == ["3", "1"]
    assert s.image_size == 64 and s.private_train[0][0].shape == (3, 64, 64)
    assert len(s.public) == 3 and s.labels_are_identities  # its prior check holds out whole people


def test_class_split_holds_out_whole_classes_never_none_never_all():
    from re_analysis.data.registry import class_split

    labels = np.repeat(np.arange(10), [3, 1, 4, 2, 5, 2, 3, 1, 2, 4])
    train, test = class_split(labels, 0.2, seed=0)
    held = set(labels[test])
    assert len(held) == 2 and not held & set(labels[train]) and len(train) + len(test) == len(labels)
    assert np.array_equal(test, class_split(labels, 0.2, seed=0)[1])  # seeded
    assert len(set(labels[class_split(labels, 0.01, seed=0)[1]])) == 1  # at least one class
    assert len(set(labels[class_split(labels, 0.99, seed=0)[0]])) == 1  # never all of them
    with pytest.raises(ReAnalysisError, match="at least 2 classes"):
        class_split(np.zeros(5, dtype=int), 0.2, seed=0)


def test_folders_dataset_reads_private_and_public_trees_in_the_models_class_order(tmp_path):
    """The user's own data: two class-per-folder trees (digits written out as PNGs), grayscale,
    a class-order file, held-out private images from their own tree; each bad input one error."""
    digits = load_dataset("mnist5k")
    x, y = materialize(digits.private_train)
    xp, yp = materialize(digits.public)
    for root, xs, ys, per, name in ((tmp_path / "private", x, y, 6, "digit"), (tmp_path / "public", xp, yp, 4, "other"),
                                    (tmp_path / "test", x, y, 2, "digit")):
        for k in sorted(set(ys.tolist())):
            (root / f"{name}{k}").mkdir(parents=True)
            rows = (ys == k).nonzero().squeeze(1)[:per] if root.name != "test" else (ys == k).nonzero().squeeze(1)[-per:]
            for i, r in enumerate(rows.tolist()):
                Image.fromarray(xs[r, 0].numpy()).save(root / f"{name}{k}" / f"{i}.png")
    order = tmp_path / "classes.txt"
    order.write_text("digit4\ndigit3\ndigit2\ndigit1\ndigit0\n")
    s = load_dataset("folders", image_size=28, private=str(tmp_path / "private"), public=str(tmp_path / "public"),
                     private_test=str(tmp_path / "test"), channels=1, classes=str(order))
    assert (s.num_classes, s.num_public_classes, s.channels) == (5, 5, 1)
    assert s.private_class_names == ["digit4", "digit3", "digit2", "digit1", "digit0"]
    xt, yt = materialize(s.private_train)
    assert xt.shape == (30, 1, 28, 28) and xt.dtype == torch.uint8
    assert torch.equal(xt[yt == 4][0], x[(y == 0).nonzero()[0, 0]])  # output 4 is digit0: the file's order
    assert len(s.private_test) == 10 and len(s.public) == 20
    split = load_dataset("folders", image_size=28, private=str(tmp_path / "private"), public=str(tmp_path / "public"),
                         channels=1, seed=3)
    assert len(split.private_test) == 5 and len(split.private_train) == 25  # a seeded 10%, one per class at least
    (tmp_path / "private" / "digit9").mkdir()
    with pytest.raises(ReAnalysisError, match="holds no image"):
        load_dataset("folders", private=str(tmp_path / "private"), public=str(tmp_path / "public"))
    (tmp_path / "private" / "digit9").rmdir()
    (tmp_path / "public" / "digit0").mkdir()
    Image.fromarray(x[0, 0].numpy()).save(tmp_path / "public" / "digit0" / "0.png")
    with pytest.raises(ReAnalysisError, match="share class folder"):
        load_dataset("folders", private=str(tmp_path / "private"), public=str(tmp_path / "public"))
    (tmp_path / "public" / "digit0" / "0.png").unlink()
    (tmp_path / "public" / "digit0").rmdir()
    order.write_text("digit4\ndigit3\n")
    with pytest.raises(ReAnalysisError, match="must name each private class folder once"):
        load_dataset("folders", private=str(tmp_path / "private"), public=str(tmp_path / "public"), classes=str(order))
