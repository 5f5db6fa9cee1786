"""tfod.data.records: examples read back by the OD API's own decoder, atomic shards, label map."""
import glob
import hashlib

import numpy as np
import pytest
import tensorflow as tf

import tfod.compat  # noqa: F401

# isort: split
from object_detection.core.standard_fields import InputDataFields as Fields
from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder
from object_detection.protos import input_reader_pb2
from object_detection.utils import label_map_util

from tfod.data import records
from tfod.data.dicom import prepare_image


def _image(path) -> records.RecordImage:
    prepared = prepare_image(path)
    return records.RecordImage(prepared.encoded, prepared.image_format, prepared.height,
                               prepared.width, prepared.patient_id, prepared.sha256)


def test_od_api_decoder_reads_our_example(sample_dicoms, tmp_path):
    image = _image(sample_dicoms[0])
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.05, 0.9, 0.45]]
    label_map = records.write_label_map(tmp_path)
    decoded = TfExampleDecoder(label_map_proto_file=str(label_map)).decode(
        tf.constant(records.encode_example(image, boxes)))
    np.testing.assert_allclose(decoded[Fields.groundtruth_boxes].numpy(), boxes, rtol=1e-6)
    assert decoded[Fields.groundtruth_classes].numpy().tolist() == [1, 1]
    assert decoded[Fields.source_id].numpy().decode() == image.source_id
    assert decoded[Fields.filename].numpy().decode() == f"{image.source_id}.dcm"
    assert decoded[Fields.key].numpy().decode() == hashlib.sha256(image.encoded).hexdigest()
    assert decoded[Fields.image].shape == (1024, 1024, 3)


def test_negative_example_has_no_boxes(sample_dicoms):
    decoded = TfExampleDecoder().decode(tf.constant(records.encode_example(
        _image(sample_dicoms[1]))))
    assert decoded[Fields.groundtruth_boxes].shape == (0, 4)
    assert decoded[Fields.groundtruth_classes].shape == (0,)


def test_encoding_is_deterministic_and_decodes_back(sample_dicoms):
    image = _image(sample_dicoms[2])
    boxes = np.array([[0.25, 0.125, 0.5, 0.75]])
    first = records.encode_example(image, boxes)
    assert first == records.encode_example(image, boxes.copy())
    back = records.decode_example(first)
    assert back["encoded"] == image.encoded and back["format"] == "jpeg"
    assert (back["height"], back["width"], back["source_id"]) == (1024, 1024, image.source_id)
    np.testing.assert_array_equal(back["boxes"], boxes.astype(np.float32))
    assert back["class_text"] == ["opacity"] and back["class_label"] == [1]
    assert (back["original_height"], back["original_width"]) == (1024, 1024)  # not resized


def test_original_size_is_the_pre_resize_size_height_first(sample_dicoms):
    prepared = prepare_image(sample_dicoms[0], "png", max_size=256)
    image = records.RecordImage(prepared.encoded, "png", prepared.height, prepared.width,
                                prepared.patient_id, prepared.sha256, 768, 1024)
    back = records.decode_example(records.encode_example(image))
    assert (back["height"], back["width"]) == (256, 256)
    assert (back["original_height"], back["original_width"]) == (768, 1024)
    features = tf.train.Example.FromString(records.encode_example(image)).features.feature
    assert features[records.ORIGINAL_HEIGHT_KEY].int64_list.value == [768]


def _png_mask_decoder() -> TfExampleDecoder:
    return TfExampleDecoder(load_instance_masks=True,
                            instance_mask_type=input_reader_pb2.PNG_MASKS)


def test_box_masks_are_read_by_the_od_api_png_mask_decoder(sample_dicoms):
    image = _image(sample_dicoms[0])
    # pixel edges 102.4 | 204.8 | 512 | 614.4 and 0 | 1000.6 | 1024 | 1000.9 (x 1024)
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.0, 1000.6 / 1024, 1.0, 1000.9 / 1024]]
    decoded = _png_mask_decoder().decode(tf.constant(
        records.encode_example(image, boxes, box_masks=True)))
    masks = decoded[Fields.groundtruth_instance_masks].numpy()
    assert masks.shape == (2, 1024, 1024) and masks.dtype == np.float32
    expected = np.zeros_like(masks)
    expected[0, 102:512, 205:614] = 1  # pixels whose centre lies in the box
    expected[1, :, 1000] = 1  # a box thinner than a pixel gets the pixel holding its middle
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_array_equal(decoded[Fields.groundtruth_instance_mask_weights], [1, 1])


def test_box_masks_of_a_negative_and_without_the_flag(sample_dicoms):
    image = _image(sample_dicoms[1])
    decoded = _png_mask_decoder().decode(tf.constant(records.encode_example(image,
                                                                            box_masks=True)))
    assert decoded[Fields.groundtruth_instance_masks].shape == (0, 1024, 1024)
    boxes = [[0.25, 0.125, 0.5, 0.75]]
    plain = records.encode_example(image, boxes)
    assert records.decode_example(plain)["masks"] == []
    masked = records.decode_example(records.encode_example(image, boxes, box_masks=True))
    assert len(masked["masks"]) == 1 and masked["masks"][0].startswith(b"\x89PNG")
    assert plain == records.encode_example(image, boxes, box_masks=False)


def test_shard_appears_only_when_complete(tmp_path):
    path = tmp_path / records.shard_name("fold0", 0, 1)
    writer = records.ShardWriter(path)
    writer.write(b"first")
    assert not path.exists() and writer.temporary.exists()
    assert glob.glob(str(tmp_path / records.shard_glob("fold0"))) == []
    writer.write(b"second")
    assert writer.close() == path and not writer.temporary.exists()
    assert records.read_records(path) == [b"first", b"second"]


def test_interrupted_shard_leaves_nothing(tmp_path):
    path = tmp_path / records.shard_name("test", 2, 3)
    with pytest.raises(RuntimeError), records.ShardWriter(path) as writer:
        writer.write(b"partial")
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_shard_names_and_globs(tmp_path):
    assert records.shard_name("fold3", 12, 40) == "fold3-00012-of-00040.tfrecord"
    for fold in range(3):
        (tmp_path / records.shard_name(records.fold_prefix(fold), 0, 1)).write_bytes(b"")
    train = [glob.glob(g) for g in records.train_globs(tmp_path, 1, records.find_folds(tmp_path))]
    assert [[p.rsplit("/", 1)[1] for p in found] for found in train] == [
        ["fold0-00000-of-00001.tfrecord"], ["fold2-00000-of-00001.tfrecord"]]
    assert glob.glob(records.eval_glob(tmp_path, 1)) == [
        str(tmp_path / "fold1-00000-of-00001.tfrecord")]
    (tmp_path / "fold12-00000-of-00001.tfrecord").write_bytes(b"")
    (tmp_path / ".fold4-00000-of-00001.tfrecord.incomplete").write_bytes(b"")
    assert records.find_folds(tmp_path) == [0, 1, 2, 12]


def test_label_map_is_read_by_the_od_api(tmp_path):
    path = records.write_label_map(tmp_path)
    assert path.name == "label_map.pbtxt"
    assert label_map_util.get_label_map_dict(str(path)) == {"opacity": 1}
    with pytest.raises(ValueError, match="start at 1"):
        records.write_label_map(tmp_path, {0: "background"})
