"""Damaged and hostile inputs of the inference half (issue 20, items 6 to 9): each file kind is
read in one place, which names the file and the line an editor shows, exit 2.

Real files throughout: the sample's DICOMs cut short, real checkpoints with their bytes
damaged, CSVs with blank lines and binary bytes, the tools run as subprocesses.
"""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import LABELS_CSV, SAMPLE_DICOMS, one_line_error, run_tool

from tfod import detections as det
from tfod.config import pipeline as configs
from tfod.data.convert import convert
from tfod.data.input_files import input_files
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.infer import ensemble, export, outside, sizes
from tfod.infer.ensemble_stage import EnsembleRequest, run_ensemble
from tfod.runfolder import RunFolder, read_best_checkpoint

BINARY = bytes(range(256)) * 8  # not UTF-8 anywhere


def labelled_dicoms(positive: int, negative: int) -> list:
    """Sample DICOMs of ``positive`` patients with a box and ``negative`` without."""
    labels = pd.read_csv(LABELS_CSV, dtype=str)
    target = labels.groupby("patientId")["Target"].first()
    found = {p.stem: p for p in SAMPLE_DICOMS.glob("*.dcm")}
    chosen = [i for i in sorted(found) if target.get(i) == "1"][:positive]
    chosen += [i for i in sorted(found) if target.get(i) == "0"][:negative]
    assert len(chosen) == positive + negative
    return [found[i] for i in chosen]


def small_training_set(folder, dicoms, cut_to: dict | None = None):
    """A DICOM folder holding ``dicoms`` (some cut to a byte count) and their label rows."""
    images = folder / "images"
    images.mkdir(parents=True)
    for path in dicoms:
        data = path.read_bytes()
        (images / path.name).write_bytes(data[:(cut_to or {}).get(path.stem, len(data))])
    labels = pd.read_csv(LABELS_CSV, dtype=str)
    csv = folder / "labels.csv"
    labels[labels["patientId"].isin([p.stem for p in dicoms])].to_csv(csv, index=False)
    return images, csv


# --- item 6: corrupt files ---------------------------------------------------------------------


def test_a_binary_detections_file_is_named_by_every_reader(tmp_path):
    binary = tmp_path / "detections.csv"
    binary.write_bytes(b"patientId,x,y,width,height,score\n" + BINARY)
    for reader in (det.read_detections, det.read_labels, det.read_submission, det.read_table):
        with pytest.raises(BadInput, match="not a text CSV file") as error:
            reader(binary)
        assert str(binary) in str(error.value)
    line = one_line_error(subprocess.run(
        [sys.executable, "-m", "tools.ensemble", f"--detections={binary}", "--noprogress"],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__))))
    assert f"{binary}: not a text CSV file" in line


def test_test_ids_that_repeat_once_stripped_name_both_lines(tmp_path):
    ids = tmp_path / "sample_submission.csv"
    ids.write_text("patientId,PredictionString\na,\n\nb,\n a ,\n")
    with pytest.raises(BadInput, match=r"sample_submission.csv, row 5: patientId a listed "
                                       r"twice \(first on line 2\)"):
        det.read_patient_ids(ids)
    ids.write_text("patientId,PredictionString\n a ,\nb ,\n")
    assert det.read_patient_ids(ids) == ["a", "b"]


def test_an_id_list_is_a_patientid_column_or_one_id_per_line(tmp_path):
    labels = tmp_path / "labels.csv"  # tfod-evaluate --images: an image once per box
    labels.write_text("patientId,x,y,width,height,Target\na,1,2,3,4,1\nb,,,,,0\na,5,6,7,8,1\n")
    assert det.read_patient_ids(labels, repeats=True) == ["a", "b"]
    with pytest.raises(BadInput, match=r"labels.csv, row 4: patientId a listed twice "
                                       r"\(first on line 2\)"):
        det.read_patient_ids(labels)
    listed = tmp_path / "ids.txt"
    listed.write_text("a\n\n b \n")
    assert det.read_patient_ids(listed) == ["a", "b"]
    listed.write_text("a,b\nc,d\n")
    with pytest.raises(BadInput, match=r"ids.txt, row 1: neither one patientId per line"):
        det.read_patient_ids(listed)


def config_only_run(converted, folder) -> RunFolder:
    """A run folder with a real pipeline.config and nothing trained."""
    run = RunFolder(folder).create()
    configs.build_config("ssd_mobilenet_v2", converted, 0, run.pipeline_config, image_size=128,
                         batch_size=2, num_steps=10)
    return run


@pytest.mark.parametrize("text, message", [
    ("{\"checkpoint\": \"ckpt-3\", ", r"best_checkpoint.json, row 1: not JSON"),
    ("{\"step\": 10, \"score\": 0.1}\n", r"best_checkpoint.json: lacks the evaluator's "
                                          r"'checkpoint'"),
    ("[1, 2]\n", r"best_checkpoint.json: lacks"),
])
def test_a_damaged_best_checkpoint_json_is_named_not_called_missing(
        converted_sample, tmp_path, text, message):
    run = config_only_run(converted_sample, tmp_path / "run")
    assert read_best_checkpoint(run) is None  # absent: the evaluator wrote none yet
    run.best_checkpoint.write_text(text)
    with pytest.raises(BadInput, match=message):
        read_best_checkpoint(run)
    with pytest.raises(BadInput, match=message):
        export.export(run.root)
    assert not run.exported.exists()


def test_a_garbage_pipeline_config_is_named_by_its_one_reader(converted_sample, tmp_path):
    garbage = tmp_path / "pipeline.config"
    garbage.write_bytes(b"model { ssd { num_classes: \x00\x01 }")
    with pytest.raises(configs.ConfigError, match=f"{garbage}: not a pipeline config"):
        configs.read_configs(garbage)
    garbage.write_text("train_config { batch_size: 2 }\n")  # parses, but defines no model
    with pytest.raises(configs.ConfigError, match="defines no model"):
        configs.read_configs(garbage)
    garbage.write_text("this is not { a proto")
    run = tmp_path / "run"
    line = one_line_error(run_tool("train", f"--pipeline_config={garbage}", f"--run_dir={run}",
                                   "--dry_run"))
    assert f"{garbage}: not a pipeline config" in line  # the file given, not the run's copy
    assert not run.exists()
    broken = config_only_run(converted_sample, tmp_path / "broken")
    broken.pipeline_config.write_text("this is not { a proto")
    line = one_line_error(run_tool("export", f"--run_dir={broken.root}",
                                   "--checkpoint=latest"))
    assert f"{broken.pipeline_config}: not a pipeline config" in line


def test_a_num_classes_override_is_refused_before_any_export_work(converted_sample, tmp_path):
    run = config_only_run(converted_sample, tmp_path / "run")  # no checkpoint: no work to do
    with pytest.raises(BadInput, match="--config_override: num_classes 3 differs from the 1 "):
        export.export(run.root, "latest", overrides=["model.ssd.num_classes=3"])
    assert not run.exported.exists()


def damaged_copy(trained, folder, damage) -> RunFolder:
    """A copy of ``trained`` whose best checkpoint's files went through ``damage``."""
    shutil.copytree(trained.root, folder, ignore=shutil.ignore_patterns("exported"))
    run = RunFolder(folder)
    damage(run.best_dir / read_best_checkpoint(run)["checkpoint"])
    return run


def truncate_index(prefix):
    index = prefix.with_name(prefix.name + ".index")
    index.write_bytes(index.read_bytes()[:40])


def zero_data(prefix):
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    data.write_bytes(bytes(data.stat().st_size))


@pytest.mark.slow
@pytest.mark.parametrize("damage, damaged_file", [
    (truncate_index, ".index"), (zero_data, ".data-00000-of-00001")])
def test_a_damaged_checkpoint_is_named_as_the_runs_own_file(trained_run, tmp_path,
                                                            damage, damaged_file):
    run = damaged_copy(trained_run, tmp_path / "run", damage)
    name = read_best_checkpoint(run)["checkpoint"]
    done = run_tool("export", f"--run_dir={run.root}")
    line = one_line_error(done)
    assert f"{run.best_dir / name}{damaged_file}: damaged checkpoint {name}" in line
    assert "tfod-export-" not in done.stderr  # never the temporary link of the export
    assert not run.exported.exists() and not list(run.root.glob(".exported.incoming*"))


def test_classifier_weights_that_are_not_hdf5_are_refused_before_the_run_folder(
        converted_sample, tmp_path):
    weights = tmp_path / "densenet121_notop.h5"
    weights.write_bytes(BINARY)
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "tools.classify", "--mode=train", f"--data_dir={converted_sample}",
         f"--run_dir={run_dir}", f"--weights={weights}", "--num_steps=1"],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert f"{weights}: --weights is not an HDF5 weights file" in one_line_error(done)
    assert not run_dir.exists()


# --- item 7: empty folds, too few patients per class -------------------------------------------


def test_classifier_refuses_an_empty_fold_as_tfod_train_does(tmp_path):
    dicoms = labelled_dicoms(positive=0, negative=2)
    images, labels = small_training_set(tmp_path, dicoms, cut_to={dicoms[1].stem: 300})
    data_dir = tmp_path / "converted"
    convert(images, data_dir, labels, num_folds=2, seed=42, workers=1, progress=False)
    run_dir = tmp_path / "run"
    roles = set()
    for fold in (0, 1):  # one fold is empty: evaluating it, or training on it, is refused
        with pytest.raises(BadInput) as tfod_train:  # what tfod-train says of this folder
            configs.check_data_for_fold(data_dir, fold)
        done = subprocess.run(
            [sys.executable, "-m", "tools.classify", "--mode=train", f"--data_dir={data_dir}",
             f"--fold={fold}", f"--run_dir={run_dir}", "--num_steps=1"],
            capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        line = one_line_error(done)
        assert f"{data_dir}: {tfod_train.value.reason}" in line
        roles.add(line.split(" set of --fold=")[0].split()[-1])
        assert not run_dir.exists()
    assert roles == {"training", "evaluation"}


def test_convert_names_the_classes_too_small_for_the_folds(tmp_path):
    images, labels = small_training_set(tmp_path, labelled_dicoms(positive=1, negative=1))
    with pytest.raises(BadInput) as error:
        convert(images, tmp_path / "out", labels, num_folds=2, seed=42, workers=1,
                progress=False)
    message = str(error.value)
    assert message.startswith(f"{labels}: every class has fewer patients than the 2 folds")
    assert "(Target 0: 1 patient(s), Target 1: 1 patient(s))" in message
    assert not (tmp_path / "out" / "manifest.json").exists()


# --- item 8: line numbers as an editor shows them ----------------------------------------------


def test_every_csv_reader_names_the_line_an_editor_shows(tmp_path):
    rows = [f"p{i},1024,1024" for i in range(15)]
    text = "patientId,width,height\n" + "\n".join(rows[:8]) + "\n\n" + "\n".join(rows[8:])
    # line 1 header, lines 2-9 rows, line 10 blank, lines 11-17 rows, line 18 the bad one
    sizes_csv = tmp_path / "sizes.csv"
    sizes_csv.write_text(text + "\np15,1024,wide\n")
    with pytest.raises(BadInput, match=r"sizes.csv, row 18: width '1024' and height 'wide'"):
        sizes.read_image_sizes(sizes_csv)
    ids = tmp_path / "ids.csv"
    ids.write_text(text.replace(",1024,1024", ",").replace("width,height", "x") + "\np3,\n")
    with pytest.raises(BadInput, match=r"ids.csv, row 18: patientId p3 listed twice "
                                       r"\(first on line 5\)"):
        det.read_patient_ids(ids)
    classifier = tmp_path / "classifier.csv"
    classifier.write_text(text.replace(",1024,1024", ",0.5").replace("width,height",
                                                                      "probability")
                          + "\np15,1.5\n")
    with pytest.raises(BadInput, match=r"classifier.csv, row 18: probability 1.5 is outside"):
        outside.read_probabilities(classifier)
    images = tmp_path / "images.csv"  # tfod-evaluate --images
    images.write_text(text.replace(",1024,1024", ",").replace("width,height", "x") + "\n,p99\n")
    with pytest.raises(BadInput, match=r"images.csv, row 18: empty patientId"):
        det.read_patient_ids(images, repeats=True)
    mapped = tmp_path / "mapped.csv"
    mapped.write_text("patientId,x,y,width,height,score\n\na,1,2,3,4,0.5\nb,1,2,0,4,0.5\n")
    with pytest.raises(BadInput, match=r"mapped.csv, row 4: box of b has no area"):
        outside.read_mapped_csv(mapped)


def test_darknet_boxes_name_their_line_and_an_empty_file_is_refused(tmp_path):
    darknet = tmp_path / "comp4_det_test_opacity.txt"
    darknet.write_text("a 0.9 101 201 251 501\n\nb 0.5 300 21 111 121\n")  # x1 > x2 on line 3
    with pytest.raises(BadInput, match=r"opacity.txt, row 3: box of b has no area"):
        outside.read_darknet(darknet)
    for empty in (b"", b"\n \n"):
        darknet.write_bytes(empty)
        with pytest.raises(BadInput, match=r"opacity.txt: empty Darknet result file"):
            outside.read_darknet(darknet)


# --- item 9: smaller ones ----------------------------------------------------------------------


def test_unreadable_dicoms_under_input_are_skipped_and_counted_for_sizes(tmp_path, capsys):
    folder = tmp_path / "dicoms"
    folder.mkdir()
    dicoms = sorted(SAMPLE_DICOMS.glob("*.dcm"))[:3]
    for path in dicoms:
        shutil.copy(path, folder / path.name)
    (folder / dicoms[1].name).write_bytes(dicoms[1].read_bytes()[:300])
    found, skipped = sizes.sizes_of_inputs(str(folder))
    assert sorted(found) == sorted([dicoms[0].stem, dicoms[2].stem])
    assert [s.patient_id for s in skipped] == [dicoms[1].stem]
    assert "truncated" in skipped[0].reason
    detections = tmp_path / "detections.csv"
    det.write_detections({dicoms[0].stem: ImageBoxes([[10, 20, 30, 40]], [0.9]),
                          dicoms[2].stem: ImageBoxes.empty()}, detections)
    summary = run_ensemble(EnsembleRequest(detections=[str(detections)], input=str(folder),
                                           output=str(tmp_path / "fused.csv"), progress=False))
    assert summary["images"] == 2
    assert f"note: {folder}: 1 unreadable input(s) skipped" in capsys.readouterr().out


def test_a_single_dicom_as_input_is_that_image(tmp_path):
    one = sorted(SAMPLE_DICOMS.glob("*.dcm"))[0]
    assert input_files(str(one)) == ("dicom list", [one])
    upper = tmp_path / (one.stem + ".DCM")
    shutil.copy(one, upper)
    assert input_files(str(upper)) == ("dicom list", [upper])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_submission_follows_the_umask(tmp_path, umask):
    table = BoxTable.of({"a": ImageBoxes([[1, 2, 3, 4]], [0.9]), "b": ImageBoxes.empty()})
    old = os.umask(umask)
    try:
        path = ensemble.submit(table, tmp_path / "submission.csv", ["a", "b"], 0.5)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_empty_folds_flag_and_run_root_without_folds_are_refused(converted_sample, tmp_path):
    base = ["--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}", "--dry_run"]
    line = one_line_error(run_tool("train", *base, "--folds=", f"--run_root={tmp_path}"))
    assert "--folds is empty" in line
    line = one_line_error(run_tool("train", *base, f"--run_root={tmp_path}"))
    assert "--run_root is where --folds trains" in line
    assert list(tmp_path.iterdir()) == []


def test_every_exit_code_of_the_tools_is_documented():
    from tfod import errors

    codes = (open(os.path.join(os.path.dirname(__file__), "..", "docs", "errors.md"))
             .read().split("## Convert")[0])
    for name in ("OK", "FAILED", "BAD_INPUT", "NAN_LOSS", "INTERRUPTED"):
        assert f"| {getattr(errors, name)} | `{name}` |" in codes
