"""The generated small sets of benchmarks.small_sets: seeded, complete, and with no class drawn alike."""
import hashlib
import os

import numpy as np
import pytest

from benchmarks import small_sets


def _digest(root):
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(folder, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.mark.parametrize("name", list(small_sets.SETS))
def test_each_set_is_seeded_and_has_every_class_in_both_splits(name, tmp_path):
    a = small_sets.make(str(tmp_path / "a"), name, 3, 2, seed=5)
    b = small_sets.make(str(tmp_path / "b"), name, 3, 2, seed=5)
    assert _digest(a.root) == _digest(b.root)
    assert len(a.classes) == 10
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(os.listdir(os.path.join(a.root, split))) == list(a.classes)
        assert all(len(os.listdir(os.path.join(a.root, split, c))) == n for c in a.classes)


@pytest.mark.parametrize("name", list(small_sets.SETS))
def test_the_class_alone_changes_the_drawing(name):
    """With every nuisance factor the same (same random stream), two classes never give the same picture."""
    classes, draw = small_sets.SETS[name]
    images = {c: draw(c, np.random.default_rng(7), 64).astype(np.float32) for c in classes}
    assert all(img.shape == (64, 64, 3) for img in images.values())
    for i, c in enumerate(classes):
        for d in classes[i + 1:]:
            assert np.abs(images[c] - images[d]).mean() > 1.0, (c, d)
