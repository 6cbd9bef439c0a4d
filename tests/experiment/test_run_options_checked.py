"""Run options that failed late or silently (issue #23): a legal long file name in `predict`,
`--workers` beyond the machine, an unusable disk cache, dataset options that clash with the
config or hold bad values, and one image size for training and `predict`."""

from medsegloss.experiment import components
from medsegloss.experiment import train_cli
import logging

import numpy as np
import pytest
from PIL import Image

from medsegloss import _io
from medsegloss.data import cache, get_dataset
from medsegloss.experiment import predict, trainer
from medsegloss.experiment.config import Config

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(dataset="phantom-lesion", image_size=32, base_width=2, depth=1, steps=2, batch_size=4,
            dataset_options={"num_cases": 5, "slices_per_case": 2, "size": 16}, metrics=("dice",), threads=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run trained on 16 x 16 slices: its dataset option size=16 over --image-size 32."""
    out = tmp_path_factory.mktemp("run")
    trainer.fit(Config(**TINY), out, quiet=True)
    return out / "best.pt"


def test_predict_of_a_251_character_file_name(checkpoint, tmp_path):
    name = "x" * 247 + ".png"  # 251 bytes: legal (255 at most), its temp name once was not
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24), dtype=np.uint8)).save(tmp_path / name)
    written = predict.predict_files(checkpoint, [tmp_path / name], tmp_path / "out")
    assert [path.name for path in written] == [name]
    with Image.open(tmp_path / "out" / name) as mask:
        assert mask.size == (24, 20)
    assert [path.name for path in (tmp_path / "out").iterdir()] == [name]  # no temp file left


def test_atomic_writes_keep_the_format_suffixes_of_a_long_name(tmp_path):
    path = tmp_path / ("y" * 244 + ".nii.gz")
    seen = []
    _io.save_atomic(path, lambda temp: (seen.append(temp), temp.write_bytes(b"x")))
    assert path.read_bytes() == b"x" and seen[0].name.endswith(".tmp.nii.gz") and len(seen[0].name) < 100


def test_predict_resizes_to_the_size_training_used(checkpoint, tmp_path, monkeypatch):
    sizes = []
    segment = predict.segment_volume
    monkeypatch.setattr(predict, "segment_volume", lambda model, volume, size, **options: (
        sizes.append(size), segment(model, volume, size, **options))[1])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
    predict.predict_files(checkpoint, [tmp_path / "a.png"], tmp_path / "out")
    assert sizes == [16]  # the dataset option size, as in training; not --image-size 32


def test_workers_beyond_the_cores_are_capped(tmp_path):
    config = Config(**{**TINY, "workers": 100000})
    run = trainer.prepare_run(config, tmp_path, components.check_config(config), components.resolve_device(config),
                              quiet=True)
    assert trainer.make_loader(run).num_workers == trainer.usable_cores()


def _folder(root):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(root / "images" / f"c{k}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(root / "masks" / f"c{k}.png")
    return root


def test_an_unusable_cache_folder_never_fails_a_run(tmp_path, monkeypatch, caplog):
    root = _folder(tmp_path / "data")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDSEGLOSS_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setenv("MEDSEGLOSS_CACHE_MB", "lots")
    cache.clear()
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        data = get_dataset("folder", root, split="all", size=None)
    cache.clear()
    assert len(data.cases) == 3
    assert f"disk cache {blocker / 'cache'} is not usable" in caplog.text
    assert "MEDSEGLOSS_CACHE_MB='lots' is not a number" in caplog.text


@pytest.mark.parametrize("options, message", [
    ('{"on_error": "ignore"}', "dataset option on_error must be one of raise, skip, got 'ignore'"),
    ('{"dims": 3}', "dataset option(s) dims are set by the run's config (--dims)"),
    ('{"seed": 4}', "dataset option(s) seed are set by the run's config (--seed)"),
    ('{"size": "big"}', "dataset option size must be an int >= 1 or null (native size), got 'big'"),
])
def test_bad_dataset_options_are_refused_before_anything_is_written(options, message, tmp_path, capsys):
    out, root = tmp_path / "run", _folder(tmp_path / "data")
    assert train_cli.main(["--dataset", "folder", "--data-root", str(root), "--out", str(out), "--quiet", "--steps", "2",
                         "--image-size", "16", "--base-width", "2", "--depth", "1", "--dataset-options", options]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
