"""tfod's own input pipeline, train step and fine-tune loading (tfod.train.inputs, .odapi).

The OD API's ``inputs.train_input`` / ``inputs.eval_input`` are the reference where they still
import (the TF 2.15 stack): same records in, same batches and losses out. Augmented boxes are
checked on the pixels: a bright box drawn into the image must still be bright under every box
the pipeline gives, through flips and crops. Fine-tune checkpoints of both types, written by
the tests, load; a run with moving averages trains and is scored on its averages.
"""
import ast
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image

import tfod.compat  # noqa: F401
from tfod.config import pipeline as configs
from tfod.data import records
from tfod.runfolder import RunFolder, latest_checkpoint
from tfod.train import augment, odapi, trainer
from tfod.train import inputs as pipeline
from tfod.train.evaluator import CheckpointScorer
from tfod.train.settings import TrainSettings

# isort: split
from object_detection.builders import model_builder
from object_detection.core import standard_fields as fields
from object_detection.protos import preprocessor_pb2

REPO = Path(__file__).resolve().parents[1]
ESTIMATOR_ERA = {"object_detection.inputs", "object_detection.model_lib",
                 "object_detection.model_lib_v2"}
# TensorFlow 2.16 removed tf.compat.v1.estimator, which object_detection.inputs imports: the
# reference exists on the 2.15 stack only.
Fields = fields.InputDataFields
SIZE = 128


def estimator_era_imports(source: str) -> list[str]:
    """Imports of the estimator-era OD API modules in ``source`` (also as strings, such as
    ``importlib.import_module`` takes), as ``line: code``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        if ESTIMATOR_ERA & set(names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_import_scan_finds_estimator_era_imports():
    assert estimator_era_imports("from object_detection import inputs\n")
    assert estimator_era_imports("import object_detection.model_lib_v2 as m\n")
    assert estimator_era_imports("from object_detection import model_lib, eval_util\n")
    assert estimator_era_imports("importlib.import_module('object_detection.model_lib')\n")
    assert not estimator_era_imports("from object_detection.builders import model_builder\n")
    assert not estimator_era_imports("from tfod.train import inputs\n")


def test_no_tfod_module_imports_estimator_era_modules():
    found = {str(path.relative_to(REPO)): hits for path in sorted((REPO / "tfod").rglob("*.py"))
             if (hits := estimator_era_imports(path.read_text()))}
    assert not found, f"tfod imports modules that TensorFlow 2.16 cannot import: {found}"


def _configs(data_dir, batch_size=4, augmentations=("none",)):
    built = configs.build_configs("ssd_mobilenet_v2", data_dir, 0, image_size=SIZE,
                                  batch_size=batch_size, augmentations=list(augmentations))
    built["train_input_config"].shuffle = False
    return built


def _assert_same_batch(reference, ours) -> None:
    """Every field of ours equals the reference's (dtype, shape, values)."""
    for name, value in ours.items():
        expected = reference[name].numpy()
        assert value.dtype == expected.dtype and value.shape == expected.shape, name
        np.testing.assert_array_equal(value.numpy(), expected, err_msg=name)


@pytest.mark.estimator_reference
def test_batches_and_losses_equal_the_od_api_inputs(converted_sample):
    from object_detection import inputs  # the reference (a test, not a tfod module)

    built = _configs(converted_sample)
    model = model_builder.build(built["model"], is_training=True)
    args = (built["train_config"], built["train_input_config"], built["model"])
    reference = next(iter(inputs.train_input(*args, model=model)))
    ours = next(iter(pipeline.train_dataset(*args, model=model)))
    for theirs, mine in zip(reference, ours, strict=True):
        _assert_same_batch(theirs, mine)
    # image-level label fields, which our records never hold (constant: ones or zeros)
    assert set(reference[1]) - set(ours[1]) == {
        Fields.groundtruth_image_classes, Fields.groundtruth_verified_neg_classes,
        Fields.groundtruth_not_exhaustive_classes}
    assert ours[1][Fields.num_groundtruth_boxes].numpy().sum() > 0  # boxes are compared

    losses = [odapi.losses_and_predictions(model, *batch, unpad_groundtruth=False)[0]
              for batch in (reference, ours)]
    assert losses[0].keys() == losses[1].keys() and odapi.LOSS_KEY in losses[1]
    for name in losses[0]:
        assert float(losses[0][name]) == float(losses[1][name]), name

    built["eval_config"].batch_size = 3  # several images a batch: ground truth padded
    eval_model = model_builder.build(built["model"], is_training=False)
    args = (built["eval_config"], built["eval_input_configs"][0], built["model"])
    batches = list(zip(inputs.eval_input(*args, model=eval_model),
                       pipeline.eval_dataset(*args, model=eval_model), strict=True))
    assert len(batches) >= 2
    for reference, ours in batches:
        assert Fields.original_image in ours[0]
        for theirs, mine in zip(reference, ours, strict=True):
            _assert_same_batch(theirs, mine)


# --------------------------------------------------------------- augmented boxes on pixels

BRIGHT_BOXES = np.array([[0.15, 0.1, 0.45, 0.3], [0.55, 0.2, 0.8, 0.45]])  # left half only


def _bright_box_records(converted_sample, folder: Path) -> Path:
    """Fold-0 and fold-1 records of one real radiograph, darkened, with BRIGHT_BOXES drawn in
    white (a lossless PNG) and labelled."""
    serialized = records.read_records(records.eval_glob(converted_sample, 0))[0]
    decoded = records.decode_example(serialized)
    gray = Image.open(io.BytesIO(decoded["encoded"])).convert("L").resize((256, 256))
    pixels = (np.asarray(gray, dtype=np.float32) * 0.4).astype(np.uint8)
    for ymin, xmin, ymax, xmax in (BRIGHT_BOXES * 256).astype(int):
        pixels[ymin:ymax, xmin:xmax] = 255
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    image = records.RecordImage(stream.getvalue(), "png", 256, 256, "bright", "0" * 64)
    for fold in (0, 1):
        with records.ShardWriter(folder / records.shard_name(f"fold{fold}", 0, 1)) as writer:
            writer.write(records.encode_example(image, BRIGHT_BOXES))
    records.write_label_map(folder)
    return folder


def test_flipped_and_cropped_boxes_stay_on_their_opacities(converted_sample, tmp_path):
    built = _configs(_bright_box_records(converted_sample, tmp_path), batch_size=8)
    train_config = built["train_config"]
    del train_config.data_augmentation_options[:]
    for step in ("random_horizontal_flip {}", "ssd_random_crop {}"):
        train_config.data_augmentation_options.append(
            text_format.Parse(step, preprocessor_pb2.PreprocessingStep()))
    dataset = pipeline.train_dataset(train_config, built["train_input_config"], built["model"])
    centres, sizes = [], []
    for features, labels in dataset.take(8):
        images = features[Fields.image].numpy()[..., 0]  # [-1, 1]: white is 1
        counts = labels[Fields.num_groundtruth_boxes].numpy()
        for image, boxes, count in zip(images, labels[Fields.groundtruth_boxes].numpy(), counts,
                                       strict=True):
            for ymin, xmin, ymax, xmax in np.round(boxes[:count] * SIZE).astype(int):
                inside = image[ymin + 1:ymax - 1, xmin + 1:xmax - 1]
                if min(inside.shape) >= 2:  # not a sliver that the crop cut at its edge
                    assert inside.mean() > 0.8, (ymin, xmin, ymax, xmax)
                    sizes.append((ymax - ymin) / SIZE)
            centres.extend((boxes[:count, 1] + boxes[:count, 3]) / 2)
    assert len(sizes) > 40
    assert min(centres) < 0.5 < max(centres)  # flipped and not
    assert max(sizes) > 1.2 * (BRIGHT_BOXES[:, 2] - BRIGHT_BOXES[:, 0]).max()  # cropped


def _config_steps(data_dir, names):
    """The ssd_mobilenet_v2 config's augmentation steps ``names``, built as the OD API builds
    them."""
    from object_detection.builders import preprocessor_builder

    options = configs.build_configs("ssd_mobilenet_v2", data_dir, 0)["train_config"]
    return [preprocessor_builder.build(option)
            for option in options.data_augmentation_options
            if option.WhichOneof("preprocessing_step") in names]


def test_the_window_gives_core_preprocessor_pixels_and_boxes(converted_sample):
    """For the same draws (flipped, a crop that cuts a box, brightness, contrast), the window
    decoded from the JPEG gives the very pixels and boxes that core.preprocessor gives on the
    whole decoded image: the reordering is exact, and so is the model's resize after it."""
    from object_detection.core import preprocessor
    from object_detection.core.preprocessor_cache import PreprocessorCache as Cache

    encoded = records.decode_example(
        records.read_records(records.eval_glob(converted_sample, 0))[0])["encoded"]
    whole = tf.cast(tf.io.decode_jpeg(encoded), tf.float32)
    height, width = whole.shape[:2]
    groundtruth = {Fields.groundtruth_boxes: tf.constant(BRIGHT_BOXES, tf.float32),
                   Fields.groundtruth_classes: tf.constant([1, 1], tf.int64),
                   Fields.groundtruth_weights: tf.ones([2])}
    begin, size = [100, 350], [800, 500]  # in the flipped image; cuts the first box
    box = tf.constant([[[begin[0] / height, begin[1] / width, (begin[0] + size[0]) / height,
                         (begin[1] + size[1]) / width]]])
    steps = _config_steps(converted_sample, augment.GEOMETRIC + augment.PHOTOMETRIC)
    crop_options = next(params for function, params in steps
                        if function is preprocessor.random_crop_image)
    delta, factor = 0.07, 1.08
    cache = Cache()
    cache.update(Cache.HORIZONTAL_FLIP, "", 0.0)  # < probability: flip
    cache.update(Cache.CROP_IMAGE, "", 1.0)  # > random_coef: crop
    cache.update(Cache.STRICT_CROP_IMAGE, crop_options["min_object_covered"],
                 (tf.constant(begin + [0]), tf.constant(size + [-1]), box))
    cache.update(Cache.ADJUST_BRIGHTNESS, "", delta)
    cache.update(Cache.ADJUST_CONTRAST, "", factor)
    reference = preprocessor.preprocess(
        {Fields.image: whole[tf.newaxis], **groundtruth}, steps, preprocess_vars_cache=cache)

    window = augment.Window(tf.zeros([2], tf.int32), tf.constant([height, width]),
                            tf.constant(False))
    window, ours = augment.flip_window(window, groundtruth, tf.constant(True))
    window, ours = augment.crop_window(window, ours, tf.constant(begin), tf.constant(size),
                                       box[0, 0], crop_options["overlap_thresh"],
                                       crop_options["clip_boxes"])
    image = augment.mirrored(augment.decode_window(encoded, window, tf.io.decode_image),
                             window.flipped)
    image = augment.contrast(augment.brightness(image, delta), factor)
    np.testing.assert_array_equal(image.numpy(), reference[Fields.image][0].numpy())
    assert ours.keys() == groundtruth.keys()
    for key, value in ours.items():
        np.testing.assert_array_equal(value.numpy(), reference[key].numpy(), err_msg=key)
    assert len(ours[Fields.groundtruth_boxes]) == 2 and ours[Fields.groundtruth_boxes][0, 3] == 1


def test_window_first_only_for_flips_and_crops_then_brightness_and_contrast(converted_sample):
    ssd = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0)["train_config"]
    assert augment.supported([option.WhichOneof("preprocessing_step")
                              for option in ssd.data_augmentation_options])
    assert augment.supported(["random_horizontal_flip", "ssd_random_crop",
                              "random_adjust_brightness", "random_adjust_contrast"])
    assert augment.supported(["random_crop_image"])
    assert not augment.supported([])
    assert not augment.supported(["random_adjust_contrast", "random_crop_image"])
    assert not augment.supported(["random_horizontal_flip", "random_vertical_flip"])


# --------------------------------------------------------------- fine-tune checkpoints

def _values(module) -> list[np.ndarray]:
    return [variable.numpy() for variable in module.variables]


def _model_and_dataset(built):
    """A training model of ``built`` whose variables exist, and its training dataset."""
    model = model_builder.build(built["model"], is_training=True)
    dataset = pipeline.train_dataset(built["train_config"], built["train_input_config"],
                                     built["model"], model=model)
    odapi.build_variables(tf.distribute.get_strategy(), model, next(iter(dataset)), False)
    return model, dataset


def _fine_tune_checkpoint(built, checkpoint_type: str, folder: Path):
    """A checkpoint of ``checkpoint_type`` from a model of ``built`` with random backbone
    weights (so that a load shows), and that backbone."""
    source, _ = _model_and_dataset(built)
    backbone = source.restore_from_objects("classification")["feature_extractor"]
    for variable in backbone.variables:
        variable.assign(tf.random.uniform(variable.shape, seed=1))
    saved = tf.train.Checkpoint(**(
        {"model": source} if checkpoint_type == "detection" else {"feature_extractor": backbone}))
    return saved.save(str(folder / "ckpt")), backbone


@pytest.mark.parametrize("checkpoint_type", ["detection", "classification"])
def test_fine_tune_checkpoints_load(converted_sample, tmp_path, checkpoint_type):
    """A checkpoint of either type, written here from a tiny model, fills the new model's
    backbone."""
    built = _configs(converted_sample, batch_size=2)
    train_config = built["train_config"]
    strategy = tf.distribute.get_strategy()
    train_config.fine_tune_checkpoint, backbone = _fine_tune_checkpoint(
        built, checkpoint_type, tmp_path)
    train_config.fine_tune_checkpoint_type = checkpoint_type

    target, dataset = _model_and_dataset(built)
    target_backbone = target.restore_from_objects("classification")["feature_extractor"]
    expected = _values(backbone)
    assert not any(np.array_equal(new, old) for new, old in zip(
        _values(target_backbone), expected, strict=True) if old.size > 1)
    odapi.load_fine_tune_checkpoint(target, train_config, strategy, dataset)
    for new, old in zip(_values(target_backbone), expected, strict=True):
        np.testing.assert_array_equal(new, old)


@pytest.mark.slow
def test_trainer_fine_tunes_with_moving_averages_that_the_evaluator_swaps_in(
        converted_sample, tmp_path):
    """The trainer starts from a detection checkpoint and keeps moving averages; the
    evaluator restores the averaged weights; the scores are real."""
    prefix, _ = _fine_tune_checkpoint(_configs(converted_sample, batch_size=2), "detection",
                                      tmp_path / "source")
    config = configs.build_config(
        "ssd_mobilenet_v2", converted_sample, 0, tmp_path / "pipeline.config",
        image_size=SIZE, batch_size=2, num_steps=2, fine_tune_checkpoint=prefix,
        overrides=["train_config.optimizer.use_moving_average=true",
                   "eval_config.use_moving_averages=true"])
    run = RunFolder(tmp_path / "run").create()
    shutil.copyfile(config, run.pipeline_config)
    assert trainer.train(run.root, TrainSettings(num_steps=2, checkpoint_every=2)) == 2
    scorer = CheckpointScorer(config, run)
    metrics = scorer.score(latest_checkpoint(run.root))
    assert int(scorer.global_step.numpy()) == 2 and 0.0 <= metrics["rsna/score"] <= 1.0
    raw = model_builder.build(scorer.configs["model"], is_training=False)
    images, shapes = raw.preprocess(tf.zeros([1, SIZE, SIZE, 3]))
    raw.predict(images, shapes)  # builds the variables
    tf.train.Checkpoint(model=raw).read(str(latest_checkpoint(run.root).path)).expect_partial()
    swapped = [not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(
        scorer.model.trainable_variables, raw.trainable_variables, strict=True)]
    assert any(swapped)  # the evaluator scored the averages, not the last weights
