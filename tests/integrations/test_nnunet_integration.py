"""medsegloss inside nnU-Net v2 (skipped without the ``nnunet`` extra).

The adapter is checked against nnU-Net's own loss (our ``ce + dice(include_background=False)``
is nnU-Net's DC_and_CE_loss plus 1: nnU-Net's Dice term is ``−Dice``, ours ``1 − Dice``), the
target formats (float label maps, ignore label, one region), the environment/config, and the
shim file against nnU-Net's own trainer finder. The end-to-end test runs nnU-Net's fingerprint,
planning and preprocessing on four tiny NIfTI volumes, builds the trainer directly (the CLI
imports every trainer module, some of which need torchvision) and checks that its training step
returned our loss's value on the same batch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from medsegloss import losses  # noqa: E402
from medsegloss.integrations import nnunet as integration  # noqa: E402


def _label_map(shape, classes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, shape, generator=generator).double()  # nnU-Net: float (N, 1, *spatial)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_our_ce_plus_dice_is_nnunets_default_loss_plus_one(batch_dice):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    output = torch.randn(2, 3, 8, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = _label_map((2, 1, 8, 8, 6), 3)
    theirs = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                            weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    ours = integration.build_nnunet_loss(f"ce + dice(include_background=False, batch={batch_dice})")
    torch.testing.assert_close(ours(output, target), theirs(output, target) + 1, rtol=1e-6, atol=1e-6)


def test_ignore_label_is_a_mask_and_losses_without_ignore_index_are_refused():
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    output = torch.randn(2, 3, 8, 8, 6, dtype=torch.float64)
    target = _label_map((2, 1, 8, 8, 6), 4)  # label 3 is the dataset's "ignore"
    ours = integration.NNUNetLoss(losses.build("ce + dice(include_background=False, batch=True)"), ignore_label=3)
    labels = target[:, 0].long()
    plain = losses.build("ce + dice(include_background=False, batch=True)")
    torch.testing.assert_close(ours(output, target), losses.masked(plain)(output, labels, labels != 3))
    theirs = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                            weight_ce=1, weight_dice=1, ignore_label=3, dice_class=MemoryEfficientSoftDiceLoss)
    # nnU-Net's CE averages over the non-ignored voxels of the whole batch, ours per sample: equal
    # when both samples keep the same number of voxels, so compare on one sample
    torch.testing.assert_close(ours(output[:1], target[:1]), theirs(output[:1], target[:1]) + 1, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="no ignore_index"):
        integration.NNUNetLoss(losses.get("combo"), ignore_label=3)


def test_one_region_with_the_ignore_channel_and_several_regions_multilabel():
    output = torch.randn(2, 1, 8, 8)
    region = (torch.rand(2, 1, 8, 8) > 0.5).float()
    ignored = (torch.rand(2, 1, 8, 8) > 0.7).float()
    loss = integration.NNUNetLoss(losses.get("dice_bce"), ignore_label=2, has_regions=True)
    expected = losses.masked(losses.get("dice_bce"))(output, region[:, 0].long(), ignored[:, 0] == 0)
    torch.testing.assert_close(loss(output, torch.cat([region, ignored], 1)), expected)
    # several overlapping regions: the loss's multi-label form on nnU-Net's multi-hot target
    output, regions = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).float()
    several = integration.build_nnunet_loss("dice_ce", has_regions=True, regions=3)
    torch.testing.assert_close(several(output, regions), losses.get("dice_ce", multilabel=True)(output, regions))
    per_region = torch.stack([losses.get("dice_ce")(output[:, r:r + 1], regions[:, r].long()) for r in range(3)])
    torch.testing.assert_close(several(output, regions), per_region.mean())
    with pytest.raises(ValueError, match="takes no voxel mask"):
        integration.NNUNetLoss(losses.get("dice", multilabel=True), ignore_label=4, has_regions=True)(
            output, torch.cat([regions, torch.zeros(2, 1, 8, 8)], 1))


def test_deep_supervision_uses_nnunets_weights_on_its_downsampled_targets():
    loss = integration.build_nnunet_loss("ce + 0.5*dice", deep_supervision_outputs=3)
    outputs = [torch.randn(2, 3, 8 // 2**i, 8 // 2**i) for i in range(3)]
    targets = [_label_map((2, 1, 8 // 2**i, 8 // 2**i), 3, seed=i) for i in range(3)]
    plain = losses.build("ce + 0.5*dice")
    expected = sum(w * plain(o, t[:, 0].long()) for w, o, t in zip([2 / 3, 1 / 3, 0.0], outputs, targets))
    torch.testing.assert_close(loss(outputs, targets), expected)
    with pytest.raises(ValueError, match="distance maps"):
        integration.build_nnunet_loss("gdl_boundary", deep_supervision_outputs=3)


def test_loss_from_environment_and_config_file(tmp_path):
    assert integration.loss_from_environment({}) == ("dice_ce", {})
    assert integration.loss_from_environment({"MEDSEGLOSS_LOSS": "ce + 0.5*dice"}) == ("ce + 0.5*dice", {})
    config = tmp_path / "loss.json"
    config.write_text(json.dumps({"loss": "ce + dice", "options": {"include_background": False}}))
    assert integration.loss_from_environment({"MEDSEGLOSS_CONFIG": str(config)}) == (
        "ce + dice", {"include_background": False})
    with pytest.raises(ValueError, match="not both"):
        integration.loss_from_environment({"MEDSEGLOSS_CONFIG": str(config), "MEDSEGLOSS_LOSS": "ce"})
    with pytest.raises(ValueError, match="missing.json"):
        integration.loss_from_environment({"MEDSEGLOSS_CONFIG": str(tmp_path / "missing.json")})
    config.write_text(json.dumps({"loss": "ce", "weights": 1}))
    with pytest.raises(ValueError, match="a loss config is"):
        integration.loss_from_environment({"MEDSEGLOSS_CONFIG": str(config)})


def test_the_shim_makes_nnunets_finder_return_our_trainer(tmp_path):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    path = integration.install_trainer(tmp_path)
    assert path == tmp_path / "nnUNetTrainerMedsegloss.py" and not list(tmp_path.glob(".*.tmp"))
    from medsegloss import _io

    assert path.stat().st_mode & 0o777 == 0o666 & ~_io.current_umask()  # written by _io: a plain file's mode
    found = recursive_find_python_class(str(tmp_path), "nnUNetTrainerMedsegloss", None, base_folder=str(tmp_path),
                                        cleanup_imports_from_base_folder=True)
    assert found is integration.nnUNetTrainerMedsegloss
    with pytest.raises(ValueError, match="does not exist"):
        integration.install_trainer(tmp_path / "nowhere")


def _write_raw_dataset(raw):
    import nibabel

    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:20, :24, :24]
    for case in range(4):
        centre = rng.uniform(8, 14, 3)
        label = np.zeros((20, 24, 24), np.uint8)
        label[(zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 < 25] = 1
        label[2:6, 2:8, 14:22] = 2
        image = (label * 100 + rng.normal(0, 20, label.shape)).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(image, np.eye(4)), raw / "imagesTr" / f"toy_{case:03d}_0000.nii.gz")
        nibabel.save(nibabel.Nifti1Image(label, np.eye(4)), raw / "labelsTr" / f"toy_{case:03d}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "sphere": 1, "box": 2},
        "numTraining": 4, "file_ending": ".nii.gz"}))


@pytest.mark.slow
def test_nnunet_trains_with_our_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEGLOSS_LOSS", "ce + 0.5*tversky(alpha=0.3, beta=0.7)")
    _preprocessed_toy(tmp_path, monkeypatch)

    folder = tmp_path / "nnUNet_preprocessed" / "Dataset501_Toy"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # as nnU-Net's run_training sets it
    trainer = integration.nnUNetTrainerMedsegloss(plans=plans, configuration="3d_fullres", fold="all",
                                                  dataset_json=json.loads((folder / "dataset.json").read_text()),
                                                  device=torch.device("cpu"))
    trainer.on_train_start()
    wrapper = trainer.loss
    assert isinstance(wrapper.loss, integration.NNUNetLoss)
    assert wrapper.loss.loss.extra_repr() == "1*ce + 0.5*tversky"
    batch = next(trainer.dataloader_train)
    with torch.no_grad():  # the same forward pass the training step makes, scored by our loss alone
        outputs = trainer.network(batch["data"])
        weights = [w for w in wrapper.weight_factors]
        plain = losses.build("ce + 0.5*tversky(alpha=0.3, beta=0.7)")
        expected = sum(w * plain(o, t[:, 0].long()) for w, o, t in zip(weights, outputs, batch["target"]) if w)
    assert len(outputs) >= 2 and weights[-1] == 0
    step = trainer.train_step(batch)
    assert float(step["loss"]) == pytest.approx(float(expected), rel=1e-5)
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        getattr(loader, "_finish", lambda: None)()


def test_trainer_names_follow_the_documented_rule():
    assert integration.trainer_name() == "nnUNetTrainerMedsegloss"
    assert integration.trainer_name("ce + 0.5*tversky(alpha=0.3, beta=0.7)", 5) == (
        "nnUNetTrainerMedsegloss_ce_0_5_tversky_alpha_0_3_beta_0_7_5epochs")
    assert integration.trainer_name(None, 5) == "nnUNetTrainerMedsegloss_5epochs"
    assert "__" not in integration.trainer_name("  ce ++ dice  ")  # nnU-Net splits folder names at "__"
    with pytest.raises(ValueError, match="epochs must be"):
        integration.trainer_name("dice", 0)
    with pytest.raises(ValueError, match="no letters or digits"):
        integration.trainer_name("+ *")


def test_install_writes_one_findable_class_per_loss(tmp_path, capsys):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    assert integration.main(["install", str(tmp_path), "--loss", "ce + dice", "--loss", "tversky", "--epochs", "5"]) == 0
    printed = capsys.readouterr().out
    names = ["nnUNetTrainerMedsegloss_ce_dice_5epochs", "nnUNetTrainerMedsegloss_tversky_5epochs"]
    assert all(f"-tr {name}" in printed for name in names)
    assert sorted(p.stem for p in tmp_path.glob("*.py")) == names
    for name, loss in zip(names, ["ce + dice", "tversky"]):
        found = recursive_find_python_class(str(tmp_path), name, None, base_folder=str(tmp_path),
                                            cleanup_imports_from_base_folder=True)
        assert found.__name__ == name and found.medsegloss_loss == loss and found.medsegloss_epochs == 5
        assert issubclass(found, integration.nnUNetTrainerMedsegloss.__mro__[1])  # nnU-Net's nnUNetTrainer
    # the environment-variable trainer with a budget; a different loss under a taken name is refused
    assert integration.install_trainers([None], 5, tmp_path) == {
        "nnUNetTrainerMedsegloss_5epochs": tmp_path / "nnUNetTrainerMedsegloss_5epochs.py"}
    with pytest.raises(ValueError, match="already exists for another loss string"):
        integration.install_trainers(["ce+dice"], 5, tmp_path)
    assert integration.main(["install", str(tmp_path), "--loss", "tversky(alpah=0.3)"]) == 2
    assert "alpha" in capsys.readouterr().err


def _preprocessed_toy(tmp_path, monkeypatch, configuration="3d_fullres"):
    """nnU-Net's fingerprint, plans and preprocessing of the four toy volumes; the paths set."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))  # nnU-Net >= 2.6 reads its paths when used
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")  # planning sets torch threads from it: must be >= 1
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    _write_raw_dataset(tmp_path / "nnUNet_raw" / "Dataset501_Toy")
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    extract_fingerprints([501], num_processes=1, check_dataset_integrity=False, verbose=False)
    plan_experiments([501])
    preprocess([501], configurations=(configuration,), num_processes=(1,), verbose=False)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # data augmentation in this process
    folder = tmp_path / "nnUNet_preprocessed" / "Dataset501_Toy"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # as nnU-Net's run_training sets it
    return plans, json.loads((folder / "dataset.json").read_text())


@pytest.mark.slow
def test_two_losses_train_into_two_results_folders(tmp_path, monkeypatch):
    plans, dataset_json = _preprocessed_toy(tmp_path, monkeypatch)
    specs = ["ce + dice", "ce + 0.5*tversky(alpha=0.3, beta=0.7)"]
    folders = []
    for spec in specs:
        plans["continue_training"] = False  # nnU-Net's trainer pops it from the plans
        trainer = integration.trainer_class(spec, 1)(plans=plans, configuration="3d_fullres", fold="all",
                                                     dataset_json=dataset_json, device=torch.device("cpu"))
        assert trainer.num_epochs == 1
        trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 2, 1  # CPU: a few steps
        trainer.run_training()
        trainer.perform_actual_validation(False)
        folders.append(tmp_path / "nnUNet_results" / "Dataset501_Toy"
                       / f"{integration.trainer_name(spec, 1)}__nnUNetPlans__3d_fullres" / "fold_all")
    assert folders[0] != folders[1]
    for spec, folder in zip(specs, folders):
        checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert checkpoint["trainer_name"] == integration.trainer_name(spec, 1)
        assert json.loads((folder / "debug.json").read_text())["medsegloss_loss_used"] == spec
        summary = json.loads((folder / "validation" / "summary.json").read_text())
        assert len(summary["metric_per_case"]) == 4 and set(summary["mean"]) == {"1", "2"}
        log = next(folder.glob("training_log_*.txt")).read_text()
        assert f"medsegloss loss: {spec!r}" in log
