"""The Convert stage end to end: real DICOMs in, records read back with the OD API's decoder."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import tensorflow as tf
from conftest import CLASS_INFO_CSV, CONVERTED_SAMPLE_FOLDS, LABELS_CSV, REPO, SAMPLE_DICOMS
from dicom_files import (
    write_not_dicom,
    write_retagged,
    write_truncated,
    write_uncompressed,
    write_without_pixel_data,
)

import tfod.compat  # noqa: F401

# isort: split
from object_detection.core.standard_fields import InputDataFields as Fields
from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder
from object_detection.protos import input_reader_pb2

from tfod.data import convert, dicom, records, splits
from tfod.data.manifest import check_converted, file_sha256
from tfod.errors import BadInput


def read_back(output_dir, pattern="*.tfrecord", dct_method="INTEGER_ACCURATE",
              masks=False) -> dict:
    """``{patientId: (fold prefix, decoded tensors as numpy)}`` via tf.data + TfExampleDecoder.

    INTEGER_ACCURATE is the IDCT that matches pydicom/Pillow exactly; the OD API's input
    pipeline uses TF's default (faster) one, checked separately. ``masks`` decodes PNG
    instance masks as Mask R-CNN's ``load_instance_masks: true, mask_type: PNG_MASKS`` does.
    """
    decoder = TfExampleDecoder(label_map_proto_file=str(output_dir / "label_map.pbtxt"),
                               dct_method=dct_method, load_instance_masks=masks,
                               instance_mask_type=input_reader_pb2.PNG_MASKS)
    found = {}
    for shard in sorted(output_dir.glob(pattern)):
        for decoded in tf.data.TFRecordDataset(str(shard)).map(decoder.decode):
            patient_id = decoded[Fields.source_id].numpy().decode()
            assert patient_id not in found, f"{patient_id} written twice"
            found[patient_id] = (shard.name.split("-")[0],
                                 {key: value.numpy() for key, value in decoded.items()})
    return found


def csv_boxes_yxyx(labels: pd.DataFrame, patient_id: str, size: float = 1024) -> np.ndarray:
    rows = labels[(labels.patientId == patient_id) & (labels.Target == 1)]
    x, y, w, h = (rows[c].to_numpy() for c in ("x", "y", "width", "height"))
    return np.stack([y / size, x / size, (y + h) / size, (x + w) / size], axis=-1).reshape(-1, 4)


@pytest.fixture(scope="module")
def official_labels() -> pd.DataFrame:
    return pd.read_csv(LABELS_CSV)


@pytest.fixture(scope="module")
def sample_records(converted_sample):
    return read_back(converted_sample)


def test_sample_pixels_equal_pydicom(sample_records, sample_dicoms):
    assert sorted(sample_records) == [p.stem for p in sample_dicoms]
    for path in sample_dicoms:
        image = sample_records[path.stem][1][Fields.image]
        pixels = dicom.pixel_array(pydicom.dcmread(path))
        for channel in range(3):
            np.testing.assert_array_equal(image[..., channel], pixels)


def test_sample_pixels_with_the_od_api_default_idct(converted_sample, sample_dicoms):
    default = read_back(converted_sample, "fold0-*.tfrecord", dct_method="")
    for patient_id, (_, decoded) in default.items():
        pixels = dicom.pixel_array(pydicom.dcmread(SAMPLE_DICOMS / f"{patient_id}.dcm"))
        assert np.abs(decoded[Fields.image][..., 0].astype(int) - pixels).max() <= 8


def test_sample_boxes_equal_csv_over_1024(sample_records, official_labels):
    positives = 0
    for patient_id, (_, decoded) in sample_records.items():
        expected = csv_boxes_yxyx(official_labels, patient_id)
        np.testing.assert_allclose(decoded[Fields.groundtruth_boxes], expected, rtol=1e-6)
        assert decoded[Fields.groundtruth_classes].tolist() == [1] * len(expected)
        positives += len(expected) > 0
    assert positives == 5


def test_every_label_row_of_the_sample_is_accounted_for(sample_records, official_labels):
    rows = official_labels[official_labels.patientId.isin(sample_records)]
    in_records = sum(max(1, len(d[Fields.groundtruth_boxes])) for _, d in sample_records.values())
    assert len(rows) == in_records == 21  # 5 positives x 2 boxes + 11 negatives


def test_sample_folds_are_disjoint_and_match_folds_csv(converted_sample, sample_records):
    folds = splits.read_folds_csv(converted_sample / "folds.csv")
    assert sorted(folds.patientId) == sorted(sample_records)
    by_fold = folds.groupby("fold").patientId.apply(set).to_dict()
    assert sorted(by_fold) == list(range(CONVERTED_SAMPLE_FOLDS))
    for fold, members in by_fold.items():
        in_shards = {p for p, (prefix, _) in sample_records.items() if prefix == f"fold{fold}"}
        assert in_shards == members
    assert set(folds.view_position) == {"AP", "PA"} and folds.target.sum() == 5
    assert set(folds["class"]) == {"Normal", "No Lung Opacity / Not Normal", "Lung Opacity"}


def test_sample_manifest(converted_sample):
    manifest = json.loads((converted_sample / "manifest.json").read_text())
    assert manifest["counts"]["total"]["images"] == 16
    assert manifest["counts"]["total"]["boxes"] == 10
    assert manifest["counts"]["total"]["positives"] == 5
    for entry in manifest["shards"]:
        assert entry["sha256"] == file_sha256(converted_sample / entry["file"])
    assert sorted(e["file"] for e in manifest["shards"]) == sorted(
        p.name for p in converted_sample.glob("*.tfrecord"))
    missing = [s for s in manifest["skipped"] if "no DICOM" in s["reason"]]
    assert len(missing) == 26684 - 16  # the labelled patients whose DICOM is not in the sample
    assert manifest["flags"]["num_folds"] == CONVERTED_SAMPLE_FOLDS


def test_rerun_with_two_workers_is_byte_identical(converted_sample, tmp_path):
    stale = [tmp_path / "fold0-00000-of-00009.tfrecord",
             tmp_path / ".fold1-00000-of-00001.tfrecord.incomplete"]
    for path in stale:
        path.write_bytes(b"left by an interrupted run")
    convert.convert(SAMPLE_DICOMS, tmp_path, LABELS_CSV, CLASS_INFO_CSV,
                    num_folds=CONVERTED_SAMPLE_FOLDS, seed=42, workers=2, progress=False)
    ours = sorted(p.name for p in converted_sample.glob("*.tfrecord"))
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == ours
    for name in ours:
        assert (tmp_path / name).read_bytes() == (converted_sample / name).read_bytes()
    assert not any(path.exists() for path in stale)
    assert (tmp_path / "folds.csv").read_bytes() == (converted_sample / "folds.csv").read_bytes()


def test_worker_sends_where_the_frame_is_and_the_parent_reads_it_back(tmp_path):
    path = tmp_path / "copy.dcm"
    shutil.copy(SAMPLE_DICOMS / f"{POS_CLIPPED}.dcm", path)
    whole = dicom.prepare_image(path, "passthrough")
    sent = dicom.prepare_in_worker((str(path), "passthrough", 0, 95))
    assert sent.encoded == b"" and sent.frame_span == (sent.frame_span[0], len(whole.encoded))
    assert dicom.restore_frame(sent) == whole
    data = bytearray(path.read_bytes())
    data[sent.frame_span[0] + 1000] ^= 0xFF  # the file changes after the worker read it
    path.write_bytes(bytes(data))
    changed = dicom.restore_frame(sent)
    assert isinstance(changed, dicom.DicomError) and "changed" in changed.reason
    png = dicom.prepare_in_worker((str(path), "png", 64, 95))
    assert png.frame_span is None and dicom.restore_frame(png) is png and png.encoded


def test_png_resized_records(converted_sample, sample_records, tmp_path):
    manifest = convert.convert(SAMPLE_DICOMS, tmp_path, LABELS_CSV, CLASS_INFO_CSV,
                               num_folds=CONVERTED_SAMPLE_FOLDS, image_format="png",
                               max_size=256, images_per_shard=3, workers=1, progress=False)
    assert [c["shards"] for k, c in manifest["counts"].items() if k != "total"] == [3, 3]
    resized = read_back(tmp_path)
    assert sorted(resized) == sorted(sample_records)
    for patient_id, (prefix, decoded) in resized.items():
        assert decoded[Fields.image].shape == (256, 256, 3)
        assert prefix == sample_records[patient_id][0]
        np.testing.assert_allclose(decoded[Fields.groundtruth_boxes],
                                   sample_records[patient_id][1][Fields.groundtruth_boxes])


# --- box-shaped instance masks (--box_masks) ----------------------------------------------
@pytest.fixture(scope="module")
def masked_sample(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("masked_sample")
    convert.convert(SAMPLE_DICOMS, output_dir, LABELS_CSV, CLASS_INFO_CSV,
                    num_folds=CONVERTED_SAMPLE_FOLDS, seed=42, workers=2, box_masks=True,
                    progress=False)
    return output_dir


def csv_mask(labels: pd.DataFrame, patient_id: str, size: int, source: int = 1024):
    """The expected masks: pixels whose centre lies in a CSV box scaled to ``size``."""
    rows = labels[(labels.patientId == patient_id) & (labels.Target == 1)]
    centres = (np.arange(size) + 0.5) * source / size  # in the CSV's pixels
    masks = [np.outer((centres >= y) & (centres < y + h), (centres >= x) & (centres < x + w))
             for x, y, w, h in rows[["x", "y", "width", "height"]].to_numpy()]
    return np.asarray(masks, dtype=np.float32).reshape(-1, size, size)


def test_box_masks_are_the_csv_boxes(masked_sample, official_labels):
    found = read_back(masked_sample, masks=True)
    assert len(found) == 16
    for patient_id, (_, decoded) in found.items():
        masks = decoded[Fields.groundtruth_instance_masks]
        expected = csv_mask(official_labels, patient_id, 1024)
        assert masks.shape == (len(decoded[Fields.groundtruth_boxes]), 1024, 1024)
        np.testing.assert_array_equal(masks, expected)
        for mask, (ymin, xmin, ymax, xmax) in zip(masks, decoded[Fields.groundtruth_boxes] * 1024,
                                                  strict=True):
            rows, columns = np.nonzero(mask)
            assert (rows.min(), rows.max() + 1, columns.min(), columns.max() + 1) == (
                ymin, ymax, xmin, xmax)
            assert mask.sum() == (ymax - ymin) * (xmax - xmin)
    assert sum(len(d[Fields.groundtruth_instance_masks]) for _, d in found.values()) == 10


def test_box_masks_only_add_the_mask_feature(masked_sample, converted_sample):
    for shard in sorted(converted_sample.glob("*.tfrecord")):
        plain = records.read_records(shard)
        masked = records.read_records(masked_sample / shard.name)
        assert len(masked) == len(plain)
        for with_masks, without in zip(masked, plain, strict=True):
            example = tf.train.Example.FromString(with_masks)
            assert len(example.features.feature[records.MASK_KEY].bytes_list.value) == len(
                records.decode_example(without)["boxes"])
            del example.features.feature[records.MASK_KEY]
            assert example.SerializeToString(deterministic=True) == without
    flags = {path: json.loads((path / "manifest.json").read_text())["flags"]
             for path in (masked_sample, converted_sample)}
    assert flags[masked_sample]["box_masks"] is True
    assert flags[converted_sample]["box_masks"] is False


def test_box_masks_rerun_is_byte_identical(masked_sample, tmp_path):
    convert.convert(SAMPLE_DICOMS, tmp_path, LABELS_CSV, CLASS_INFO_CSV,
                    num_folds=CONVERTED_SAMPLE_FOLDS, seed=42, workers=1, box_masks=True,
                    progress=False)
    for shard in sorted(masked_sample.glob("*.tfrecord")):
        assert (tmp_path / shard.name).read_bytes() == shard.read_bytes()


def test_box_masks_of_resized_images(official_labels, tmp_path):
    convert.convert(SAMPLE_DICOMS, tmp_path, LABELS_CSV, CLASS_INFO_CSV, num_folds=1,
                    image_format="png", max_size=200, workers=1, box_masks=True,
                    progress=False)
    found = read_back(tmp_path, masks=True)
    for patient_id, (_, decoded) in found.items():
        np.testing.assert_array_equal(decoded[Fields.groundtruth_instance_masks],
                                      csv_mask(official_labels, patient_id, 200))
    assert sum(len(d[Fields.groundtruth_instance_masks]) for _, d in found.values()) == 10


def test_mask_rcnn_input_pipeline_reads_the_box_masks(masked_sample):
    from tfod.config import pipeline as configs
    from tfod.train.inputs import train_dataset

    size = 128
    built = configs.build_configs("mask_rcnn_inception_resnet_v2", masked_sample, fold=0,
                                  image_size=size)
    dataset = train_dataset(built["train_config"], built["train_input_config"], built["model"])
    batch = built["train_config"].batch_size
    max_boxes = built["train_input_config"].max_number_of_boxes  # what the pipeline pads to
    masks_seen = 0
    for _, labels in dataset.take(10):  # shuffled and repeated: read until a positive
        masks = labels[Fields.groundtruth_instance_masks].numpy()
        assert masks.shape == (batch, max_boxes, size, size)
        boxes = labels[Fields.groundtruth_boxes].numpy() * size
        for image_masks, image_boxes, count in zip(
                masks, boxes, labels[Fields.num_groundtruth_boxes].numpy(), strict=True):
            assert not image_masks[count:].any()  # padding
            for mask, box in zip(image_masks[:count], image_boxes[:count], strict=True):
                rows, columns = np.nonzero(mask)  # the box, through flips, crops and resizing
                extent = (rows.min(), columns.min(), rows.max() + 1, columns.max() + 1)
                np.testing.assert_allclose(extent, box, atol=1.5)
                masks_seen += 1
        if masks_seen:
            break
    assert masks_seen > 0


# --- bad inputs, built from the real files -------------------------------------------------
POS_16BIT = "00436515-870c-4b36-a041-de91049b9ab4"
POS_RESIZED = "00704310-78a8-4b38-8475-49f4573b2dbb"
POS_CLIPPED = "00aecb01-a116-45a2-956c-08d2fa55433f"
POS_ALL_OUTSIDE = "00c0b293-48e7-4e16-ac76-9269ba535a62"
POS_NAN_ROW = "00f08de1-517e-4652-a04f-d1dc9ee48593"
NEG_TRUNCATED = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"
NEG_NO_PIXELS = "00313ee0-9eaa-42f4-b0ab-c148ed3241cd"
NEG_MONOCHROME1 = "00322d4d-1c29-4943-afc9-b6754be640eb"
NEG_DUPLICATED = "003d8fa0-6bf1-40ed-b54c-ac657f8495c5"
NEG_CONFLICT = "00569f44-917d-4c86-a842-81832af98c30"


def source(patient_id):
    return SAMPLE_DICOMS / f"{patient_id}.dcm"


def _build_bad_inputs(root, official_labels):
    """A DICOM folder and labels CSV with one of each bad input; returns (dir, csv)."""
    dicom_dir = root / "dicoms"
    dicom_dir.mkdir()
    for path in sorted(SAMPLE_DICOMS.glob("*.dcm")):
        shutil.copy(path, dicom_dir / path.name)
    write_truncated(source(NEG_TRUNCATED), dicom_dir / f"{NEG_TRUNCATED}.dcm")
    write_without_pixel_data(source(NEG_NO_PIXELS), dicom_dir / f"{NEG_NO_PIXELS}.dcm")
    write_retagged(source(NEG_MONOCHROME1), dicom_dir / f"{NEG_MONOCHROME1}.dcm",
                   PhotometricInterpretation="MONOCHROME1")
    pixels = dicom.pixel_array(pydicom.dcmread(source(POS_16BIT)))
    write_uncompressed(source(POS_16BIT), dicom_dir / f"{POS_16BIT}.dcm",
                       pixels.astype(np.uint16) * 16, bits_stored=12, window=(2040, 4080))
    small = dicom.pixel_array(pydicom.dcmread(source(POS_RESIZED)))[::2, ::2].copy()
    write_uncompressed(source(POS_RESIZED), dicom_dir / f"{POS_RESIZED}.dcm", small)
    write_not_dicom(dicom_dir / "not-a-dicom.dcm")
    shutil.copy(source(NEG_DUPLICATED), dicom_dir / "unlabelled.dcm")

    sample = [p.stem for p in SAMPLE_DICOMS.glob("*.dcm")]
    table = official_labels[official_labels.patientId.isin(sample)].copy()
    table = table.astype({"x": object, "y": object, "width": object, "height": object})
    resized = table.patientId == POS_RESIZED
    table.loc[resized, ["x", "y", "width", "height"]] = (
        table.loc[resized, ["x", "y", "width", "height"]].astype(float) / 2)
    clipped = table.index[table.patientId == POS_CLIPPED]
    table.loc[clipped[0], "x"] = -40.0  # partly outside: clipped
    table.loc[clipped[1], "x"] = 1100.0  # wholly outside: dropped
    table.loc[table.patientId == POS_ALL_OUTSIDE, "y"] = 2000.0
    table.loc[table.index[table.patientId == POS_NAN_ROW][0], "width"] = np.nan
    extra = pd.DataFrame([
        table[table.patientId == NEG_DUPLICATED].iloc[0].to_dict(),
        {"patientId": NEG_CONFLICT, "x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0,
         "Target": 1},
        {"patientId": "ghost-patient", "x": None, "y": None, "width": None, "height": None,
         "Target": 0},
        {"patientId": "not-a-dicom", "x": None, "y": None, "width": None, "height": None,
         "Target": 0},
    ])
    labels_csv = root / "labels.csv"
    pd.concat([table, extra]).to_csv(labels_csv, index=False)
    return dicom_dir, labels_csv


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, official_labels):
    root = tmp_path_factory.mktemp("bad_inputs")
    dicom_dir, labels_csv = _build_bad_inputs(root, official_labels)
    output_dir = root / "out"
    manifest = convert.convert(dicom_dir, output_dir, labels_csv, num_folds=2, workers=1,
                               progress=False)
    return dicom_dir, labels_csv, output_dir, manifest


def _reasons(entries, patient_id) -> str:
    return " | ".join(e["reason"] for e in entries if e["patientId"] == patient_id)


def test_bad_inputs_are_skipped_with_reasons(bad_inputs):
    dicom_dir, labels_csv, _, manifest = bad_inputs
    skipped = manifest["skipped"]
    assert "truncated" in _reasons(skipped, NEG_TRUNCATED)
    assert [e["rows"] for e in skipped if e["patientId"] == NEG_TRUNCATED] == [[], [2]]
    assert "no pixel data" in _reasons(skipped, NEG_NO_PIXELS)
    assert "not a readable DICOM" in _reasons(skipped, "not-a-dicom")
    assert "no DICOM" in _reasons(skipped, "ghost-patient")
    assert "no usable label row" in _reasons(skipped, "unlabelled")
    assert "Target 1 row's width" in _reasons(skipped, POS_NAN_ROW)
    assert "duplicate of line" in _reasons(skipped, NEG_DUPLICATED)
    assert "also has Target 1" in _reasons(skipped, NEG_CONFLICT)
    assert "wholly outside" in _reasons(skipped, POS_CLIPPED)
    assert "every box lies outside" in _reasons(skipped, POS_ALL_OUTSIDE)
    assert "partly outside" in _reasons(manifest["notes"], POS_CLIPPED)
    assert "512x512, not 1024x1024" in _reasons(manifest["notes"], POS_RESIZED)
    sources = {e["source"] for e in skipped}
    assert str(labels_csv) in sources and str(dicom_dir / f"{NEG_TRUNCATED}.dcm") in sources
    total = manifest["counts"]["total"]
    assert (total["clipped_boxes"], total["dropped_boxes"]) == (1, 3)


def test_bad_inputs_records(bad_inputs, official_labels):
    dicom_dir, _, output_dir, _ = bad_inputs
    found = read_back(output_dir)
    assert set(found) == {p.stem for p in SAMPLE_DICOMS.glob("*.dcm")} - {
        NEG_TRUNCATED, NEG_NO_PIXELS, POS_ALL_OUTSIDE}
    pixels = dicom.pixel_array(pydicom.dcmread(SAMPLE_DICOMS / f"{POS_16BIT}.dcm"))
    np.testing.assert_array_equal(found[POS_16BIT][1][Fields.image][..., 0], pixels)
    mono = dicom.pixel_array(pydicom.dcmread(SAMPLE_DICOMS / f"{NEG_MONOCHROME1}.dcm"))
    np.testing.assert_array_equal(found[NEG_MONOCHROME1][1][Fields.image][..., 0], 255 - mono)
    boxes = {p: d[Fields.groundtruth_boxes] for p, (_, d) in found.items()}
    np.testing.assert_allclose(boxes[POS_16BIT], csv_boxes_yxyx(official_labels, POS_16BIT))
    np.testing.assert_allclose(boxes[POS_RESIZED], csv_boxes_yxyx(official_labels, POS_RESIZED),
                               rtol=1e-6)
    clipped = csv_boxes_yxyx(official_labels, POS_CLIPPED)[:1]
    clipped[0, 1] = 0.0  # x = -40 clipped to the left edge, the right edge stays
    clipped[0, 3] = (official_labels[official_labels.patientId == POS_CLIPPED].width.iloc[0]
                     - 40) / 1024
    np.testing.assert_allclose(boxes[POS_CLIPPED], clipped, rtol=1e-6)
    assert len(boxes[POS_NAN_ROW]) == 1 and len(boxes[NEG_CONFLICT]) == 1
    assert len(boxes[NEG_DUPLICATED]) == 0


def test_bad_inputs_with_two_workers_give_the_same_output(bad_inputs, tmp_path):
    dicom_dir, labels_csv, output_dir, manifest = bad_inputs
    again = convert.convert(dicom_dir, tmp_path, labels_csv, num_folds=2, workers=2,
                            progress=False)
    names = sorted(p.name for p in output_dir.glob("*.tfrecord"))
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == names
    for name in names:
        assert (tmp_path / name).read_bytes() == (output_dir / name).read_bytes()
    for key in ("counts", "shards", "skipped", "notes"):
        assert again[key] == manifest[key]


def test_bad_inputs_every_label_line_accounted_for(bad_inputs):
    _, labels_csv, output_dir, manifest = bad_inputs
    table = pd.read_csv(labels_csv)
    table["line"] = np.arange(len(table)) + 2
    found = read_back(output_dir)
    reported = {line for entry in manifest["skipped"] for line in entry["rows"]
                if entry["source"] == str(labels_csv)}
    for row in table.itertuples():
        assert row.patientId in found or row.line in reported, f"line {row.line} lost"
    for patient_id, (_, decoded) in found.items():
        mine = table[(table.patientId == patient_id) & (table.Target == 1)]
        kept = [line for line in mine.line if line not in reported]
        assert len(decoded[Fields.groundtruth_boxes]) == len(kept)


def test_strict_fails_before_writing(bad_inputs, tmp_path):
    dicom_dir, labels_csv, _, _ = bad_inputs
    with pytest.raises(convert.StrictModeError, match="nothing written") as caught:
        convert.convert(dicom_dir, tmp_path / "out", labels_csv, num_folds=2, workers=1,
                        strict=True, progress=False)
    assert "duplicate of line" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_tool_exit_status_and_test_set(bad_inputs, tmp_path):
    dicom_dir = bad_inputs[0]
    tool = [sys.executable, "-m", "tools.convert_rsna", f"--dicom_dir={dicom_dir}",
            "--noprogress", "--workers=1"]
    strict = subprocess.run([*tool, f"--output_dir={tmp_path / 'strict'}", "--strict"],
                            cwd=REPO, capture_output=True, text=True)
    assert strict.returncode == 1, strict.stderr
    assert f"{NEG_TRUNCATED}.dcm [{NEG_TRUNCATED}]: truncated DICOM file" in strict.stderr
    plain = subprocess.run([*tool, f"--output_dir={tmp_path / 'test'}", "--box_masks"],
                           cwd=REPO, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert "test " in plain.stdout and "skipped inputs: 3" in plain.stdout
    found = read_back(tmp_path / "test", "test-*.tfrecord", masks=True)
    assert len(found) == 15  # 16 real + an unlabelled copy - truncated - no pixel data - text
    assert all(len(d[Fields.groundtruth_boxes]) == 0 for _, d in found.values())
    assert all(d[Fields.groundtruth_instance_masks].shape[0] == 0 for _, d in found.values())
    manifest = json.loads((tmp_path / "test" / "manifest.json").read_text())
    assert manifest["flags"]["box_masks"] is True
    assert not (tmp_path / "test" / "folds.csv").exists()


def test_patient_without_class_row_is_converted_with_a_note(tmp_path, sample_dicoms):
    sample, kept = {p.stem for p in sample_dicoms}, sample_dicoms[0].stem
    classes = pd.read_csv(CLASS_INFO_CSV)
    classes[classes.patientId.isin(sample - {kept})].to_csv(tmp_path / "classes.csv", index=False)
    labels = pd.read_csv(LABELS_CSV)
    labels[labels.patientId.isin(sample)].to_csv(tmp_path / "labels.csv", index=False)
    manifest = convert.convert(SAMPLE_DICOMS, tmp_path / "out", tmp_path / "labels.csv",
                               tmp_path / "classes.csv", num_folds=2, workers=1, progress=False)
    assert manifest["skipped"] == []
    assert [(n["patientId"], n["reason"][:12]) for n in manifest["notes"]] == [
        (kept, "no class row")]
    assert manifest["counts"]["total"]["images"] == 16


def _sample_labels(tmp_path, patient_ids) -> Path:
    table = pd.read_csv(LABELS_CSV)
    path = tmp_path / "labels.csv"
    table[table.patientId.isin(patient_ids)].to_csv(path, index=False)
    return path


def test_two_files_for_one_patient_are_a_listed_skip(tmp_path, sample_dicoms):
    dicom_dir = tmp_path / "dicoms"
    dicom_dir.mkdir()
    for path in sample_dicoms:
        shutil.copy(path, dicom_dir / path.name)
    twin = sample_dicoms[1].stem
    shutil.copy(sample_dicoms[2], dicom_dir / f"{twin}.DCM")
    labels_csv = _sample_labels(tmp_path, [p.stem for p in sample_dicoms])
    manifest = convert.convert(dicom_dir, tmp_path / "out", labels_csv, num_folds=2, workers=1,
                               progress=False)
    skipped = [e for e in manifest["skipped"] if e["patientId"] == twin]
    assert sorted(e["source"] for e in skipped) == sorted(
        [str(dicom_dir / f"{twin}.dcm"), str(dicom_dir / f"{twin}.DCM"), str(labels_csv)])
    assert "2 files for one patientId" in skipped[0]["reason"]
    assert twin not in read_back(tmp_path / "out")
    with pytest.raises(convert.StrictModeError, match="2 files for one patientId"):
        convert.convert(dicom_dir, tmp_path / "strict", labels_csv, num_folds=2, workers=1,
                        strict=True, progress=False)


def test_damaged_frames_are_skipped_in_the_workers(tmp_path, sample_dicoms):
    from dicom_files import damaged_frames, write_frame

    dicom_dir = tmp_path / "dicoms"
    dicom_dir.mkdir()
    for path in sample_dicoms[:4]:
        shutil.copy(path, dicom_dir / path.name)
    frames = damaged_frames(sample_dicoms[0])
    write_frame(sample_dicoms[0], dicom_dir / sample_dicoms[0].name, frames["corrupted"])
    write_frame(sample_dicoms[1], dicom_dir / sample_dicoms[1].name, frames["cut short"])
    manifest = convert.convert(dicom_dir, tmp_path / "out", workers=2, progress=False)
    reasons = {e["patientId"]: e["reason"] for e in manifest["skipped"]}
    assert set(reasons) == {sample_dicoms[0].stem, sample_dicoms[1].stem}
    assert all("Corrupt JPEG data" in reason for reason in reasons.values())
    unverified = convert.convert(dicom_dir, tmp_path / "unverified", workers=1,
                                 verify_frames=False, progress=False)
    assert unverified["counts"]["total"]["images"] == 4


def test_unfinished_or_mixed_folders_are_refused_and_reruns_replace_them(tmp_path,
                                                                          sample_dicoms):
    labels_csv = _sample_labels(tmp_path, [p.stem for p in sample_dicoms])
    out = tmp_path / "out"
    convert.convert(SAMPLE_DICOMS, out, labels_csv, num_folds=3, workers=1, progress=False)
    assert len(check_converted(out, verify=True)["shards"]) == 3
    (out / "fold1-00000-of-00001.tfrecord").write_bytes(b"x")  # changed: size differs
    with pytest.raises(BadInput, match="fold1-00000-of-00001.tfrecord: 1 bytes"):
        check_converted(out)
    # a killed rerun with 2 folds: its staging folder, shards of both runs, no manifest
    (out / "manifest.json").unlink()
    (out / ".converting").mkdir()
    shutil.copy(out / "fold0-00000-of-00001.tfrecord", out / ".converting")
    with pytest.raises(BadInput, match="manifest.json: missing: the conversion did not finish"):
        check_converted(out)
    (out / "user-notes.txt").write_text("kept")
    convert.convert(SAMPLE_DICOMS, out, labels_csv, num_folds=2, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "fold0-00000-of-00001.tfrecord", "fold1-00000-of-00001.tfrecord", "folds.csv",
        "label_map.pbtxt", "manifest.json", "user-notes.txt"]
    check_converted(out, verify=True)
    (out / "fold2-00000-of-00001.tfrecord").write_bytes(b"")  # left by someone else
    with pytest.raises(BadInput, match="fold2-00000-of-00001.tfrecord: not listed"):
        check_converted(out)
    convert.convert(SAMPLE_DICOMS, out, workers=1, progress=False)  # a test set in its place
    assert sorted(p.name for p in out.glob("*.*")) == [
        "label_map.pbtxt", "manifest.json", "test-00000-of-00001.tfrecord", "user-notes.txt"]


def test_empty_fold_is_a_warning_and_strict_error(tmp_path, sample_dicoms):
    dicom_dir = tmp_path / "dicoms"
    dicom_dir.mkdir()
    for path in sample_dicoms[:3]:
        write_truncated(path, dicom_dir / path.name, keep=1.0)
    write_truncated(sample_dicoms[0], dicom_dir / sample_dicoms[0].name)
    labels_csv = _sample_labels(tmp_path, [p.stem for p in sample_dicoms[:3]])
    manifest = convert.convert(dicom_dir, tmp_path / "out", labels_csv, num_folds=3, workers=1,
                               progress=False)
    empty = [n["reason"] for n in manifest["notes"] if "has no image" in n["reason"]]
    assert len(empty) == 1 and empty[0].startswith("fold")
    with pytest.raises(convert.StrictModeError, match="has no image"):
        convert.convert(dicom_dir, tmp_path / "strict", labels_csv, num_folds=3, workers=1,
                        strict=True, progress=False)


def _non_square_dicom(source_path, target_path):
    """A 600 wide x 400 high DICOM cut from a real one (uncompressed, written by pydicom)."""
    dataset = pydicom.dcmread(source_path)
    pixels = dicom.pixel_array(dataset)[200:600, 100:700].copy()
    dataset.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    dataset.save_as(target_path)
    return pixels


@pytest.mark.parametrize("max_size", [0, 300])
def test_non_square_image_keeps_its_boxes_through_the_records(tmp_path, sample_dicoms,
                                                             max_size):
    dicom_dir = tmp_path / "dicoms"
    dicom_dir.mkdir()
    patient_id = sample_dicoms[0].stem
    _non_square_dicom(sample_dicoms[0], dicom_dir / f"{patient_id}.dcm")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("patientId,x,y,width,height,Target\n"
                          f"{patient_id},420,50,150,300,1\n{patient_id},30,280,100,60,1\n")
    convert.convert(dicom_dir, tmp_path / "out", labels_csv, num_folds=1, workers=1,
                    max_size=max_size, image_format="png", progress=False)
    record = records.decode_example(records.read_records(str(tmp_path / "out" / "*.tfrecord"))[0])
    size = (record["original_height"], record["original_width"])
    assert size == (400, 600)
    assert (record["height"], record["width"]) == ((400, 600) if not max_size else (200, 300))
    assert tf.io.decode_image(record["encoded"]).shape[:2] == (record["height"], record["width"])
    ymin, xmin, ymax, xmax = record["boxes"].T.astype(np.float64)
    xywh = np.stack([xmin * 600, ymin * 400, (xmax - xmin) * 600, (ymax - ymin) * 400], -1)
    np.testing.assert_allclose(xywh, [[420, 50, 150, 300], [30, 280, 100, 60]], atol=1e-3)


def _bad_input_cases(tmp_path) -> dict[str, tuple[list[str], str]]:
    """name -> (tool flags, what the one stderr line must say)."""
    good = LABELS_CSV.read_text().splitlines()[:40]
    files = {
        "missing_column": "patientId,x,y,width,Target\nabc,,,,0\n",
        "empty": "",
        "spaces": " patientId , x , y , width , height , Target \n" + "\n".join(good[1:]),
        "tabs": "\n".join(line.replace(",", "\t") for line in good),
        "header_only": good[0] + "\n",
        "trailing_comma": good[0] + ",\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.csv").write_text(text)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    labels = {name: [f"--labels_csv={tmp_path / name}.csv"] for name in files}
    return {
        "missing_column": (labels["missing_column"], "missing column(s) height"),
        "empty": (labels["empty"], "row 1: empty file"),
        "tabs": (labels["tabs"], "is not comma-separated"),
        "header_only": (labels["header_only"], "only its header"),
        "trailing_comma": (labels["trailing_comma"], "only its header"),
        "unwritable_output": ([f"--output_dir={blocker}/out"], "cannot write the output folder"),
        "missing_input": ([f"--dicom_dir={tmp_path}/absent"], "no such folder (--dicom_dir)"),
        "too_many_folds": ([f"--labels_csv={LABELS_CSV}", "--num_folds=17"],
                           "--num_folds=17 is more than the 16 patient(s)"),
    }


def test_tool_bad_inputs_print_one_line_and_exit_2(tmp_path):
    spaces = tmp_path / "spaces.csv"
    for name, (flags, message) in _bad_input_cases(tmp_path).items():
        command = [sys.executable, "-m", "tools.convert_rsna", f"--dicom_dir={SAMPLE_DICOMS}",
                   f"--output_dir={tmp_path / name}", "--noprogress", "--workers=1", *flags]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = [line for line in done.stderr.splitlines() if "error:" in line]
        assert done.returncode == 2, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and len(lines) == 1, (name, done.stderr[-2000:])
        assert message in lines[0], (name, lines[0])
    labels = convert.load_labels(spaces)  # spaces around the header names are accepted
    assert len(labels.patients) == len({line.split(",")[0] for line in
                                        LABELS_CSV.read_text().splitlines()[1:40]})
