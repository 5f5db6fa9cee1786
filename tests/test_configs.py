"""Configure stage: base configs, the builder, overrides, fold wiring, checkpoints, the tool."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from absl import flags

from tfod import cli
from tfod.config import ConfigError, overrides, registry
from tfod.config import pipeline as configs
from tfod.config.request import ConfigRequest
from tfod.data import records
from tfod.errors import BadInput

# isort: split
from object_detection.builders import model_builder
from object_detection.protos import pipeline_pb2, train_pb2
from object_detection.utils import config_util

REPO = Path(__file__).resolve().parents[1]
MOMENTUM = "train_config.optimizer.momentum_optimizer.momentum_optimizer_value"


# ---------------------------------------------------------------- a converted folder's layout

LABEL_MAP = 'item {\n  id: 1\n  name: "opacity"\n}\n'


def write_converted_folder(folder: Path, num_folds: int, shards: int = 1) -> Path:
    """The converter's file layout (label_map.pbtxt, fold{k}-{i:05d}-of-{n:05d}.tfrecord) with
    empty record files: enough for fold wiring, which globs names and reads no record."""
    folder.mkdir(parents=True)
    (folder / "label_map.pbtxt").write_text(LABEL_MAP)
    for fold in range(num_folds):
        for shard in range(shards):
            (folder / f"fold{fold}-{shard:05d}-of-{shards:05d}.tfrecord").touch()
    return folder


@pytest.fixture(scope="session")
def five_folds(tmp_path_factory) -> Path:
    return write_converted_folder(tmp_path_factory.mktemp("five") / "converted", num_folds=5,
                                  shards=2)


def _base_pipeline(model: str) -> pipeline_pb2.TrainEvalPipelineConfig:
    return config_util.create_pipeline_proto_from_configs(registry.load_base_configs(model))


# ---------------------------------------------------------------- base configs


@pytest.mark.parametrize("model", list(registry.REGISTRY))
def test_base_config_is_tuned_for_rsna(model):
    base = registry.load_base_configs(model)
    meta = getattr(base["model"], base["model"].WhichOneof("model"))
    assert config_util.get_number_of_classes(base["model"]) == 1
    nms = (meta.second_stage_post_processing if hasattr(meta, "second_stage_post_processing")
           else meta.post_processing).batch_non_max_suppression
    assert nms.score_threshold == pytest.approx(0.01)
    assert nms.max_total_detections == 20
    augmentations = {a.WhichOneof("preprocessing_step")
                     for a in base["train_config"].data_augmentation_options}
    assert "random_horizontal_flip" in augmentations
    assert not augmentations & {"random_adjust_hue", "random_adjust_saturation",
                                "random_distort_color"}
    assert base["train_config"].batch_size <= 32
    assert not base["train_config"].use_bfloat16
    assert configs.PLACEHOLDER in base["train_input_config"].label_map_path
    assert configs.PLACEHOLDER in base["train_config"].fine_tune_checkpoint


def test_list_models_reads_defaults_from_the_base_configs():
    listed = {spec.name: defaults for spec, defaults in registry.list_models()}
    assert list(listed) == list(registry.REGISTRY)
    ssd = registry.load_base_configs("ssd_mobilenet_v2")
    assert listed["ssd_mobilenet_v2"].batch_size == ssd["train_config"].batch_size
    assert listed["ssd_mobilenet_v2"].image_size == (
        ssd["model"].ssd.image_resizer.fixed_shape_resizer.height)
    table = registry.format_model_table()
    assert all(name in table for name in registry.REGISTRY)
    assert "3.125e-05" in table  # the hourglass learning rate, as written in its config


# ---------------------------------------------------------------- every model builds


@pytest.mark.parametrize("model", list(registry.REGISTRY))
def test_every_model_config_reads_back_and_builds(model, converted_sample, tmp_path):
    size = registry.REGISTRY[model].min_image_size
    path = configs.build_config(model, converted_sample, 0, tmp_path / "pipeline.config",
                                image_size=size, batch_size=1, num_steps=10)
    read = config_util.get_configs_from_pipeline_file(str(path))
    label_map = read["train_input_config"].label_map_path
    assert Path(label_map) == (converted_sample / "label_map.pbtxt").resolve()
    for reader in [read["train_input_config"], *read["eval_input_configs"]]:
        assert reader.label_map_path == label_map
        assert all(Path(p).is_absolute() for p in reader.tf_record_input_reader.input_path)
    assert configs.PLACEHOLDER not in path.read_text()
    assert read["train_config"].fine_tune_checkpoint == ""

    losses = _forward_loss(read["model"], size, with_masks=model.startswith("mask_rcnn"))
    assert losses and all(math.isfinite(value) for value in losses.values()), losses


def _forward_loss(model_config, size, with_masks):
    """Build the model for training with the OD API and compute its loss on one box."""
    model = model_builder.build(model_config=model_config, is_training=True)
    box = tf.constant([[0.2, 0.25, 0.6, 0.45]])
    mask = tf.pad(tf.ones([1, size // 5 * 2, size // 5]),
                  [[0, 0], [size // 5, size - size // 5 * 3], [size // 4, size - size // 4 -
                                                               size // 5]])
    model.provide_groundtruth(
        groundtruth_boxes_list=[box], groundtruth_classes_list=[tf.one_hot([0], 1)],
        groundtruth_weights_list=[tf.ones([1])],
        groundtruth_masks_list=[mask] if with_masks else None)
    images, shapes = model.preprocess(tf.random.uniform([1, size, size, 3], 0, 255))
    return {k: float(v) for k, v in model.loss(model.predict(images, shapes), shapes).items()}


def test_mask_rcnn_reads_instance_masks(converted_sample, tmp_path):
    read = configs.build_configs("mask_rcnn_inception_resnet_v2", converted_sample, 0,
                                 image_size=128)
    assert read["train_input_config"].load_instance_masks
    assert read["eval_input_configs"][0].load_instance_masks
    assert read["model"].faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor \
        .predict_instance_masks


# ---------------------------------------------------------------- fold wiring


def _train_eval_paths(data_dir, fold):
    read = configs.build_configs("ssd_mobilenet_v2", data_dir, fold)
    return (list(read["train_input_config"].tf_record_input_reader.input_path),
            [list(r.tf_record_input_reader.input_path) for r in read["eval_input_configs"]])


def test_fold_trains_on_every_other_fold_and_evaluates_on_itself(five_folds):
    train, evals = _train_eval_paths(five_folds, 2)
    folder = five_folds.resolve()
    assert train == [str(folder / records.shard_glob(f"fold{k}")) for k in (0, 1, 3, 4)]
    assert evals == [[str(folder / records.shard_glob("fold2"))]]
    matched = sorted(Path(f).name for p in train for f in tf.io.gfile.glob(p))
    assert matched == sorted(p.name for k in (0, 1, 3, 4)
                             for p in five_folds.glob(f"fold{k}-*.tfrecord"))
    assert len(matched) == 8  # two shards per fold


def test_fold_wiring_on_the_converted_sample(converted_sample):
    train, evals = _train_eval_paths(converted_sample, 1)
    assert [Path(f).name for p in train for f in tf.io.gfile.glob(p)] == [
        "fold0-00000-of-00001.tfrecord"]
    assert [Path(f).name for f in tf.io.gfile.glob(evals[0][0])] == [
        "fold1-00000-of-00001.tfrecord"]


def test_fold_minus_one_trains_on_all_folds(five_folds):
    train, evals = _train_eval_paths(five_folds, -1)
    assert [Path(p).name for p in train] == [records.shard_glob(f"fold{k}") for k in range(5)]
    assert evals == [train]


def test_fold_numbers_are_not_confused_by_prefixes(tmp_path):
    folder = write_converted_folder(tmp_path / "twelve", num_folds=12)
    train, evals = _train_eval_paths(folder, 1)
    assert str(folder.resolve() / records.shard_glob("fold1")) not in train
    assert [Path(f).name for f in tf.io.gfile.glob(evals[0][0])] == [
        "fold1-00000-of-00001.tfrecord"]


@pytest.mark.parametrize("fold, message", [(7, "no records for fold 7"),
                                           (-2, "no records for fold -2")])
def test_missing_fold_is_an_error(five_folds, fold, message):
    with pytest.raises(ConfigError, match=message):
        configs.build_configs("ssd_mobilenet_v2", five_folds, fold)


def test_folder_without_label_map_or_records_is_an_error(tmp_path, five_folds):
    with pytest.raises(ConfigError, match="no label map"):
        configs.build_configs("ssd_mobilenet_v2", tmp_path, 0)
    (tmp_path / "label_map.pbtxt").write_text((five_folds / "label_map.pbtxt").read_text())
    with pytest.raises(ConfigError, match="no fold"):
        configs.build_configs("ssd_mobilenet_v2", tmp_path, 0)


@pytest.mark.parametrize("model, meta", [("faster_rcnn_resnet50", "faster_rcnn"),
                                         ("ssd_mobilenet_v2", "ssd"),
                                         ("centernet_resnet50_fpn", "center_net")])
def test_num_classes_comes_from_the_label_map(tmp_path, model, meta):
    folder = write_converted_folder(tmp_path / "two", num_folds=2)
    (folder / "label_map.pbtxt").write_text(
        'item { id: 1 name: "opacity" }\nitem { id: 2 name: "nodule" }\n')
    read = configs.build_configs(model, folder, 0)
    assert getattr(read["model"], meta).num_classes == 2
    with pytest.raises(ConfigError, match="label map has 2 classes"):
        configs.build_configs(model, folder, 0, overrides=[f"model.{meta}.num_classes=3"])


# ---------------------------------------------------------------- size, batch, schedule


def test_num_steps_scales_the_cosine_schedule(converted_sample):
    base = registry.load_base_configs("ssd_mobilenet_v2")["train_config"]
    base_cosine = base.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    read = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0, num_steps=1500)
    cosine = (read["train_config"].optimizer.momentum_optimizer.learning_rate
              .cosine_decay_learning_rate)
    assert read["train_config"].num_steps == cosine.total_steps == 1500
    assert cosine.warmup_steps == round(base_cosine.warmup_steps * 1500 / base.num_steps)
    tiny = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0, num_steps=2)
    tiny_cosine = (tiny["train_config"].optimizer.momentum_optimizer.learning_rate
                   .cosine_decay_learning_rate)
    assert tiny_cosine.warmup_steps < tiny_cosine.total_steps == 2


def test_num_steps_scales_manual_step_boundaries(converted_sample):
    base = registry.load_base_configs("centernet_hourglass104")["train_config"]
    base_steps = [s.step for s in
                  base.optimizer.adam_optimizer.learning_rate.manual_step_learning_rate.schedule]
    read = configs.build_configs("centernet_hourglass104", converted_sample, 0, num_steps=1000)
    steps = [s.step for s in read["train_config"].optimizer.adam_optimizer.learning_rate
             .manual_step_learning_rate.schedule]
    assert steps == [round(s * 1000 / base.num_steps) for s in base_steps]
    tiny = configs.build_configs("centernet_hourglass104", converted_sample, 0, num_steps=2)
    tiny_steps = [s.step for s in tiny["train_config"].optimizer.adam_optimizer.learning_rate
                  .manual_step_learning_rate.schedule]
    assert tiny_steps == sorted(set(tiny_steps)) and tiny_steps[0] >= 1


def test_batch_size_scales_the_learning_rate_unless_one_is_given(converted_sample):
    base = registry.model_defaults(registry.load_base_configs("retinanet_resnet50"))
    halved = configs.build_configs("retinanet_resnet50", converted_sample, 0,
                                   batch_size=base.batch_size // 2)
    cosine = (halved["train_config"].optimizer.momentum_optimizer.learning_rate
              .cosine_decay_learning_rate)
    assert cosine.learning_rate_base == pytest.approx(base.learning_rate / 2)
    explicit = configs.build_configs("retinanet_resnet50", converted_sample, 0, batch_size=2,
                                     learning_rate=0.03)
    assert registry.model_defaults(explicit).learning_rate == pytest.approx(0.03)
    warmup = (explicit["train_config"].optimizer.momentum_optimizer.learning_rate
              .cosine_decay_learning_rate.warmup_learning_rate)
    assert warmup < 0.03


def test_image_size_is_set_and_checked(converted_sample):
    read = configs.build_configs("faster_rcnn_resnet50", converted_sample, 0, image_size=256)
    assert registry.model_defaults(read).image_size == 256
    with pytest.raises(ConfigError, match="multiple of 128"):
        configs.build_configs("retinanet_resnet50", converted_sample, 0, image_size=300)
    with pytest.raises(ConfigError, match="at least 256"):
        configs.build_configs("retinanet_resnet50", converted_sample, 0, image_size=128)


def _augmentations(configs_dict) -> list[str]:
    return [option.WhichOneof("preprocessing_step")
            for option in configs_dict["train_config"].data_augmentation_options]


def test_augmentations_keep_only_the_named_steps_of_the_model(converted_sample):
    model_own = _augmentations(configs.build_configs("ssd_mobilenet_v2", converted_sample, 0))
    assert "random_horizontal_flip" in model_own and len(model_own) >= 3
    flip_only = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0,
                                      augmentations=["random_horizontal_flip"])
    assert _augmentations(flip_only) == ["random_horizontal_flip"]
    for nothing in ([], ["none"]):
        bare = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0,
                                     augmentations=nothing)
        assert _augmentations(bare) == []


def test_an_augmentation_the_model_does_not_use_is_refused(converted_sample):
    with pytest.raises(ConfigError, match="random_rotation90 is not one of the "
                       "model's: random_horizontal_flip"):
        configs.build_configs("ssd_mobilenet_v2", converted_sample, 0,
                              augmentations=["random_rotation90"])


def test_unknown_model_is_an_error(converted_sample):
    with pytest.raises(ConfigError, match="unknown model 'yolo'.*ssd_mobilenet_v2"):
        configs.build_configs("yolo", converted_sample, 0)


# ---------------------------------------------------------------- overrides


def test_override_sets_nested_fields_of_the_pipeline():
    pipeline = _base_pipeline("ssd_mobilenet_v2")
    overrides.apply_overrides(pipeline, [
        f"{MOMENTUM}=0.8",
        "train_config.batch_size=3",
        "model.ssd.post_processing.score_converter=SOFTMAX",
        "train_config.data_augmentation_options[0].random_horizontal_flip.probability=0.25",
        "eval_input_reader.shuffle=true",
        'train_input_reader.tf_record_input_reader.input_path=["/a/x-*", /b/y-*]',
        ("train_config.gradient_clipping_by_norm", 5),
    ])
    train = pipeline.train_config
    assert train.optimizer.momentum_optimizer.momentum_optimizer_value == pytest.approx(0.8)
    assert train.batch_size == 3
    assert pipeline.model.ssd.post_processing.score_converter == (
        pipeline.model.ssd.post_processing.SOFTMAX)
    assert train.data_augmentation_options[0].random_horizontal_flip.probability == 0.25
    assert all(reader.shuffle for reader in pipeline.eval_input_reader)
    assert list(pipeline.train_input_reader.tf_record_input_reader.input_path) == [
        "/a/x-*", "/b/y-*"]
    assert train.gradient_clipping_by_norm == 5.0


def test_override_accepts_config_util_dict_and_its_key_names():
    read = registry.load_base_configs("ssd_mobilenet_v2")
    overrides.apply_overrides(read, [f"{MOMENTUM}=0.7", "train_input_config.shuffle=false"])
    assert read["train_config"].optimizer.momentum_optimizer.momentum_optimizer_value == (
        pytest.approx(0.7))
    assert not read["train_input_config"].shuffle


@pytest.mark.parametrize("override, message", [
    ("train_config.optimizer.momentum_optimizer.momentum=0.8", "has no field 'momentum'"),
    ("train_config.batch_sise=4", "has no field 'batch_sise'"),
    ("trainconfig.batch_size=4", "has no field 'trainconfig'"),
    ("model.ssd.num_classes.value=4", "is not a message"),
    ("train_config.optimizer=3", "is a message"),
    ("train_config.data_augmentation_options[9].random_horizontal_flip.probability=1",
     r"has 4 elements, no \[9\]"),
    ("train_config.optimizer.adam_optimizer.epsilon=0.1", "would replace it"),
    ("no_equals_sign", "expected key=value"),
])
def test_override_of_no_field_is_an_error_naming_the_key(override, message):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=message) as error:
        overrides.apply_overrides(_base_pipeline("ssd_mobilenet_v2"), [override])
    assert key in str(error.value)


@pytest.mark.parametrize("override", [
    f"{MOMENTUM}=fast",
    "train_config.batch_size=2.5",
    "train_config.batch_size=many",
    "train_config.batch_size=99999999999",
    "train_input_reader.shuffle=maybe",
    "train_input_reader.shuffle=1",
    "model.ssd.post_processing.score_converter=TANH",
    "model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios=1.0,wide",
])
def test_override_with_a_wrong_typed_value_is_an_error_naming_the_key(override):
    key = override.partition("=")[0]
    pipeline = _base_pipeline("ssd_mobilenet_v2")
    before = pipeline.SerializeToString()
    with pytest.raises(ConfigError, match="is not a valid") as error:
        overrides.apply_overrides(pipeline, ["train_config.batch_size=5", override])
    assert key in str(error.value)
    assert pipeline.SerializeToString() == before  # all or nothing


def test_build_applies_overrides_last(converted_sample):
    read = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0, batch_size=4,
                                 overrides=["train_config.batch_size=6"])
    assert read["train_config"].batch_size == 6


# ---------------------------------------------------------------- checkpoints


def _tf1_checkpoint(folder: Path) -> str:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("resnet_v1_50/conv1/weights", shape=[3, 3, 3, 8])
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(folder / "model.ckpt"))


def _tf2_checkpoint(folder: Path, top: str) -> str:
    module = tf.Module()
    module.kernel = tf.Variable(tf.zeros([3, 3]))
    if top == "model":
        return tf.train.Checkpoint(model=tf.train.Checkpoint(_feature_extractor=module)).save(
            str(folder / "ckpt"))
    return tf.train.Checkpoint(**{top: module}).save(str(folder / "ckpt"))


def test_tf1_checkpoint_is_refused(tmp_path, converted_sample):
    prefix = _tf1_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="TF1 name-based checkpoint"):
        configs.inspect_checkpoint(prefix)
    with pytest.raises(ConfigError, match="TF1"):
        configs.build_configs("ssd_mobilenet_v2", converted_sample, 0,
                              fine_tune_checkpoint=tmp_path)


@pytest.mark.parametrize("top, expected", [("model", "detection"),
                                           ("feature_extractor", "classification")])
def test_tf2_checkpoint_is_accepted_with_its_type(tmp_path, converted_sample, top, expected):
    prefix = _tf2_checkpoint(tmp_path, top)
    info = configs.inspect_checkpoint(tmp_path)  # a folder resolves to its latest checkpoint
    assert (info.prefix, info.checkpoint_type) == (prefix, expected)
    assert info.num_variables >= 1
    train = configs.build_configs("ssd_mobilenet_v2", converted_sample, 0,
                                  fine_tune_checkpoint=prefix)["train_config"]
    assert train.fine_tune_checkpoint == prefix
    assert train.fine_tune_checkpoint_type == expected
    assert train.fine_tune_checkpoint_version == train_pb2.CheckpointVersion.V2


def test_zoo_folder_layout_resolves_to_its_checkpoint(tmp_path):
    module = tf.Module()
    module.kernel = tf.Variable(1.0)
    checkpoint = tf.train.Checkpoint(model=tf.train.Checkpoint(_feature_extractor=module))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "checkpoint"), 2)
    prefix = manager.save(checkpoint_number=0)  # <zoo model>/checkpoint/{checkpoint,ckpt-0.*}
    assert prefix == str(tmp_path / "checkpoint" / "ckpt-0")
    assert configs.resolve_checkpoint(tmp_path) == prefix
    assert configs.resolve_checkpoint(tmp_path / "checkpoint") == prefix
    assert configs.inspect_checkpoint(tmp_path).checkpoint_type == "detection"


def test_unusable_checkpoints_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a checkpoint prefix"):
        configs.inspect_checkpoint(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no checkpoint in this folder"):
        configs.inspect_checkpoint(tmp_path)
    _tf2_checkpoint(tmp_path, "backbone")
    with pytest.raises(ConfigError, match="neither 'model'"):
        configs.inspect_checkpoint(tmp_path)


# ---------------------------------------------------------------- the tool


@pytest.fixture
def make_config():
    from tools import make_config

    yield make_config
    flags.FLAGS.unparse_flags()


def _run_tool(make_config, *args):
    argv = ["tfod-config", *args]
    flags.FLAGS(argv)
    return cli.guarded(make_config.main)(argv[:1])


def test_tool_writes_the_config(make_config, converted_sample, tmp_path, capsys):
    output = tmp_path / "run" / "pipeline.config"
    code = _run_tool(make_config, "--model=centernet_resnet50_fpn",
                     f"--data_dir={converted_sample}", "--fold=1", f"--output={output}",
                     "--image_size=128", "--batch_size=2", "--num_steps=40",
                     "--override=train_config.max_number_of_boxes=7")
    assert code == 0
    read = config_util.get_configs_from_pipeline_file(str(output))
    assert read["train_config"].batch_size == 2
    assert read["train_config"].num_steps == 40
    assert read["train_config"].max_number_of_boxes == 7
    assert read["model"].center_net.image_resizer.fixed_shape_resizer.height == 128
    assert f"wrote {output}" in capsys.readouterr().out


def test_tool_reports_errors_with_the_key(make_config, converted_sample, tmp_path, capsys):
    code = _run_tool(make_config, "--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}",
                     f"--output={tmp_path / 'p.config'}", "--override=train_config.nope=1")
    assert code == 2
    assert "train_config.nope" in capsys.readouterr().err
    assert not (tmp_path / "p.config").exists()


def test_tool_lists_models(make_config, capsys):
    assert _run_tool(make_config, "--list_models") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in registry.REGISTRY)


def test_the_tool_writes_what_its_config_request_writes(make_config, converted_sample, tmp_path):
    """tfod-config, tfod-train, the demo and the launcher share one request type."""
    args = ["--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}", "--fold=1",
            "--image_size=128", "--num_steps=40", "--override=train_config.max_number_of_boxes=7",
            "--augmentations=random_horizontal_flip"]
    assert _run_tool(make_config, *args, f"--output={tmp_path / 'tool.config'}") == 0
    request = ConfigRequest.from_flags(make_config.CONFIG)
    assert request == ConfigRequest(
        model="ssd_mobilenet_v2", data_dir=str(converted_sample), fold=1, image_size=128,
        num_steps=40, overrides=("train_config.max_number_of_boxes=7",),
        augmentations=("random_horizontal_flip",))
    written = request.write(tmp_path / "request.config")
    assert written.read_text() == (tmp_path / "tool.config").read_text()
    copied = ConfigRequest(pipeline_config=str(written)).write(tmp_path / "run")
    assert copied == tmp_path / "run" / "pipeline.config"
    assert copied.read_text() == written.read_text()


@pytest.mark.parametrize("fields, message", [
    ({"model": "ssd_mobilenet_v2", "data_dir": "d", "pipeline_config": "p.config"}, "either"),
    ({}, "either"),
    ({"model": "ssd_mobilenet_v2"}, "needs --data_dir"),
])
def test_a_config_request_refuses_what_it_cannot_build(fields, message):
    with pytest.raises(ConfigError, match=message) as error:
        ConfigRequest(**fields)
    assert isinstance(error.value, BadInput)  # one line, exit 2 from any tool


def test_a_missing_pipeline_config_is_bad_input(tmp_path):
    request = ConfigRequest(pipeline_config=str(tmp_path / "none.config"))
    with pytest.raises(ConfigError, match="does not exist"):
        request.write(tmp_path / "out.config")


def test_the_request_and_the_registry_import_no_tensorflow():
    """Tools define their flags and parse a request before TensorFlow loads."""
    code = ("import sys, tfod.config.request, tfod.config.registry, tfod.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'object_detection')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
