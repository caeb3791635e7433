"""The embedded digits benchmark: real images, fixed split, configurable size."""
import torch

from disco_zoo.data.digits import DIGITS_CLASSES, NUM_CLASSES, digits_dataset, digits_loaders


def test_split_is_fixed_disjoint_and_complete():
    sizes = {s: len(digits_dataset(s, size=8)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    a, b = digits_dataset("val", 8, seed=0), digits_dataset("val", 8, seed=0)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    other = digits_dataset("val", 8, seed=1)
    assert not torch.equal(a.tensors[0], other.tensors[0])
    train = {tuple(x.flatten().tolist()) for x in digits_dataset("train", 8).tensors[0][:, 0]}
    test = [tuple(x.flatten().tolist()) for x in digits_dataset("test", 8).tensors[0][:, 0]]
    assert sum(t in train for t in test) < 5  # only the set's few exact duplicate images may repeat


def test_images_are_upscaled_three_channel_and_normalised():
    images, labels = digits_dataset("train", size=32).tensors
    assert images.shape == (1257, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images[:, 0], images[:, 2])
    assert abs(images.mean().item()) < 0.1 and 0.7 < images.std().item() < 1.1
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(NUM_CLASSES))
    assert torch.bincount(labels).min() >= 120  # stratified


def test_loaders_shuffle_by_seed_and_limit():
    first = lambda seed: next(iter(digits_loaders(size=16, batch_size=8, seed=seed)["train"]))[1]  # noqa: E731
    assert torch.equal(first(0), first(0))
    loaders = digits_loaders(size=16, batch_size=8, limit=20)
    assert len(loaders["test"].dataset) == 20
    x, y = next(iter(loaders["test"]))
    assert x.shape == (8, 3, 16, 16)


def test_class_names_are_the_digits():
    assert DIGITS_CLASSES == tuple(str(d) for d in range(10)) and len(DIGITS_CLASSES) == NUM_CLASSES
