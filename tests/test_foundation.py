"""The pinned stack works: OD API imports through tfod.compat, builds, trains, draws; doctor."""

import glob
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tensorflow as tf
from conftest import REPO
from google.protobuf import text_format

import tfod.compat
from tfod import stack

DATA = Path(__file__).parent / "data"


def test_compat_fixes_are_in_effect_and_od_api_imports():
    from object_detection.builders import model_builder  # noqa: F401
    from tensorflow.python.ops import control_flow_ops
    from tf_slim.data import tfexample_decoder  # noqa: F401

    assert all(tfod.compat.fixes_in_effect().values())
    result = control_flow_ops.case(
        [(tf.constant(False), lambda: tf.constant(1))], default=lambda: tf.constant(2)
    )
    assert int(result) == 2
    assert np.zeros(2, dtype=np.float).dtype == np.float64


def _model_config(text: str):
    from object_detection.protos import model_pb2

    return text_format.Parse(text, model_pb2.DetectionModel())


def _build(model_config):
    from object_detection.builders import model_builder

    model = model_builder.build(model_config=model_config, is_training=False)
    images = tf.zeros([1, 128, 128, 3])
    preprocessed, shapes = model.preprocess(images)
    prediction = model.predict(preprocessed, shapes)
    return model.postprocess(prediction, shapes)


def _ssd_model_text() -> str:
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(
        str(DATA / "ssd_mobilenet_v2_minimal.config")
    )
    return text_format.MessageToString(configs["model"])


def _faster_rcnn_text(backbone: str, stride: int = 16, crop: int = 14) -> str:
    return (
        (DATA / "faster_rcnn_minimal.model")
        .read_text()
        .replace("faster_rcnn_resnet50_keras", f"faster_rcnn_{backbone}_keras")
        .replace("stride: 16", f"stride: {stride}")
        .replace("initial_crop_size: 14", f"initial_crop_size: {crop}")
    )


FAMILIES = {
    "ssd_mobilenet_v2": _ssd_model_text,
    "faster_rcnn_resnet50": lambda: _faster_rcnn_text("resnet50"),
    "faster_rcnn_resnet101": lambda: _faster_rcnn_text("resnet101"),
    "faster_rcnn_inception_resnet_v2": lambda: _faster_rcnn_text("inception_resnet_v2", 8, 17),
    "centernet_resnet50_fpn": lambda: (DATA / "centernet_minimal.model").read_text(),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_model_builder_builds_each_family(family):
    detections = _build(_model_config(FAMILIES[family]()))
    assert detections["detection_boxes"].shape[0] == 1
    assert np.all(np.isfinite(detections["detection_scores"].numpy()))


def _write_tiny_tfrecord(path: Path, count: int = 4) -> None:
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(count):
            pixels = rng.integers(0, 255, size=(64, 64, 1), dtype=np.uint8)
            encoded = tf.io.encode_png(pixels).numpy()
            feature = {
                "image/encoded": _bytes(encoded),
                "image/format": _bytes(b"png"),
                "image/height": _int(64),
                "image/width": _int(64),
                "image/source_id": _bytes(f"img{index}".encode()),
                "image/object/bbox/xmin": _float([0.2]),
                "image/object/bbox/xmax": _float([0.6]),
                "image/object/bbox/ymin": _float([0.3]),
                "image/object/bbox/ymax": _float([0.8]),
                "image/object/class/text": _bytes(b"opacity"),
                "image/object/class/label": _int(1),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _float(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _final_total_loss(event_dir: Path) -> float:
    losses = []
    for event_file in sorted(glob.glob(str(event_dir / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                if value.tag == "Loss/total_loss":
                    losses.append(float(tf.make_ndarray(value.tensor)))
    assert losses, f"no Loss/total_loss in {event_dir}"
    return losses[-1]


@pytest.mark.slow
@pytest.mark.estimator_reference
def test_two_training_steps_of_ssd_mobilenet_v2(tmp_path):
    from object_detection import model_lib_v2
    from object_detection.utils import config_util

    record = tmp_path / "tiny.tfrecord"
    _write_tiny_tfrecord(record)
    label_map = tmp_path / "label_map.pbtxt"
    label_map.write_text("item { id: 1 name: 'opacity' }\n")
    configs = config_util.get_configs_from_pipeline_file(
        str(DATA / "ssd_mobilenet_v2_minimal.config")
    )
    for reader in (configs["train_input_config"], configs["eval_input_configs"][0]):
        reader.label_map_path = str(label_map)
        reader.tf_record_input_reader.input_path[:] = [str(record)]
    pipeline = tmp_path / "pipeline.config"
    pipeline.write_text(
        text_format.MessageToString(config_util.create_pipeline_proto_from_configs(configs))
    )
    model_dir = tmp_path / "model"
    model_lib_v2.train_loop(
        pipeline_config_path=str(pipeline),
        model_dir=str(model_dir),
        train_steps=2,
        checkpoint_every_n=1,
        record_summaries=True,
    )
    assert np.isfinite(_final_total_loss(model_dir / "train"))
    assert tf.train.latest_checkpoint(str(model_dir))


def test_pydicom_decodes_a_real_rsna_dicom(sample_dicoms):
    dataset = pydicom.dcmread(sample_dicoms[0])
    assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    pixels = dataset.pixel_array
    assert pixels.shape == (1024, 1024) and pixels.dtype == np.uint8
    assert 20 < pixels.mean() < 235  # a real radiograph, not a blank frame


def test_od_api_eval_visualization_renders(sample_dicoms):
    from object_detection.utils import visualization_utils

    image = np.stack([pydicom.dcmread(sample_dicoms[0]).pixel_array] * 3, axis=-1)
    before = image.copy()
    visualization_utils.visualize_boxes_and_labels_on_image_array(
        image,
        np.array([[0.1, 0.1, 0.5, 0.5]]),
        np.array([1]),
        np.array([0.9]),
        {1: {"id": 1, "name": "opacity"}},
        use_normalized_coordinates=True,
        min_score_thresh=0.5,
    )
    assert not np.array_equal(before, image)  # the box and its "opacity: 90%" label were drawn
    encoded = io.BytesIO()
    from PIL import Image

    Image.fromarray(image).save(encoded, format="PNG")
    assert encoded.getvalue().startswith(b"\x89PNG")


def _doctor(env_extra=None, tmp_path=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "tools.doctor"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_doctor_passes_on_the_pinned_stack():
    result = _doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"^ok  tensorflow +{re.escape(stack.stack_for_python().tensorflow)}$",
                     result.stdout, re.M), result.stdout
    assert "in effect" in result.stdout


def test_doctor_fails_clearly_on_tensorflow_2_16(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent('__version__ = "2.16.1"\n'))
    result = _doctor({"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert result.returncode == 1
    assert "TensorFlow 2.16.1 is installed" in result.stdout
    assert "Keras 3" in result.stdout and "requirements/tf2.21/runtime.txt" in result.stdout
