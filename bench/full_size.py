"""Benchmark: every stage at RSNA's full size, through the installed console scripts.

Generates in a temporary folder an RSNA-shaped set from ``../shared/data``: one DICOM per real
patientId, the 26,684 training ids of ``stage_2_train_labels.csv`` (with their real labels,
class info and headers) and the 3,000 test ids of ``stage_2_sample_submission.csv``. The pixels
are the 16 real sample DICOMs': each file is a sample's bytes with its patientId and its
study, series and SOP instance UIDs rewritten (same lengths, so nothing else moves). Then it
runs each stage as the user would, as its own process (``.venv/bin/tfod-*``, beside this
Python), and measures it:

 1. ``tfod-convert``: the training set, 5 folds, with class info and headers;
 2. ``tfod-train``: SSD MobileNet v2 from scratch weights, ``--steps`` steps at
    ``--image_size``, with its evaluator scoring fold 0 (a fifth of the images);
 3. ``tfod-export`` of the best checkpoint;
 4. ``tfod-predict`` of the test DICOMs, without and with hflip TTA, and of fold 0's records
    with TTA (the second "model" of the ensemble);
 5. ``tfod-evaluate`` of the run's ``predictions/val.csv`` (fold 0), with the gallery;
 6. ``tfod-ensemble --fit`` of fold 0's detections without and with TTA, then the same two
    settings' test detections fused with the fitted values into the Kaggle submission;
 7. ``tfod-classify``: train (MobileNet v2 at 64 px, a few steps, scoring fold 0) and predict
    the test DICOMs;
 8. a 2-fold campaign (``tfod-train --folds=all``) of a few steps on a 2,000-image subset
    (converted first), with its ``oof.csv``.

It prints one table (stage, seconds, images, images/s, peak memory), then checks the
submission (``tfod.detections.read_submission``: the header, well-formed prediction strings,
no id twice; and every test id present) and the campaign's ``oof.csv`` (every subset image
once). Exit status 1 when a stage fails or a check does.

Peak memory is the largest total proportional set size (PSS: shared pages split between the
processes that share them) of the stage's whole process tree (a launcher, its trainer and
evaluator, convert's workers), sampled from ``/proc`` every 0.5 s, and never less than the peak
resident set of its largest single process (``wait4``'s ``ru_maxrss``, which no sampling
misses); "largest process" is that peak alone.

    .venv/bin/python bench/full_size.py [--scale 1.0] [--steps 40] [--image_size 256]
                                        [--workdir DIR]   # DIR is kept (default: a temp folder)

``--scale 0.05`` takes a random 5% of both id lists (development). On 2 cores shared with other
work the full size took 55 minutes (docs/full_size.md has the numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfod import detections as det  # noqa: E402

RSNA = REPO.parent / "shared" / "data" / "rsna"
SAMPLE_DICOMS = RSNA / "stage_2_train_images_sample"
LABELS_CSV = RSNA / "stage_2_train_labels.csv"
CLASS_INFO_CSV = RSNA / "stage_2_detailed_class_info.csv"
HEADERS_CSV = RSNA / "stage_2_train_dicom_headers.csv.gz"
SAMPLE_SUBMISSION = RSNA / "stage_2_sample_submission.csv"
BIN = Path(sys.executable).parent  # the console scripts of this Python's environment
MODEL = "ssd_mobilenet_v2"
FOLD = 0
CAMPAIGN_IMAGES = 2000
SAMPLE_SECONDS = 0.5
MB = 1024 * 1024


# --- the data set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A real sample DICOM's bytes and the values each copy rewrites."""

    data: bytes
    patient_id: bytes
    uids: tuple[bytes, ...]  # study, series and SOP instance UIDs


def load_templates() -> list[Template]:
    templates = []
    for path in sorted(SAMPLE_DICOMS.glob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        uids = tuple(str(header[key].value).encode() for key in
                     ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
        templates.append(Template(path.read_bytes(), str(header.PatientID).encode(), uids))
    return templates


def unique_uid(uid: bytes, number: int) -> bytes:
    """``uid`` with its last two components replaced by one naming ``number``, at the same
    length (RSNA's end in ``<10-digit time>.<4 to 6 digits>``)."""
    head, _, _ = uid.rpartition(b".")
    head, _, _ = head.rpartition(b".")
    tail_length = len(uid) - len(head) - 1
    digits = str(number).encode()
    if len(digits) >= tail_length:
        raise ValueError(f"UID {uid!r} is too short to number {number} copies")
    return head + b"." + b"9" + digits.rjust(tail_length - 1, b"0")


def copy_dicom(template: Template, patient_id: str, number: int) -> bytes:
    """The template's file as patient ``patient_id``, copy ``number`` (unique UIDs)."""
    new_id = patient_id.encode()
    if len(new_id) != len(template.patient_id):
        raise ValueError(f"patientId {patient_id} is not {len(template.patient_id)} characters")
    data = template.data.replace(template.patient_id, new_id)
    for uid in template.uids:
        data = data.replace(uid, unique_uid(uid, number))
    return data


@dataclass(frozen=True)
class RsnaSet:
    """The generated set: DICOM folders and the tables that go with them."""

    root: Path
    train_ids: list[str]
    test_ids: list[str]

    @property
    def train_dir(self) -> Path:
        return self.root / "stage_2_train_images"

    @property
    def test_dir(self) -> Path:
        return self.root / "stage_2_test_images"

    @property
    def labels_csv(self) -> Path:
        return self.root / "stage_2_train_labels.csv"

    @property
    def class_info_csv(self) -> Path:
        return self.root / "stage_2_detailed_class_info.csv"

    @property
    def test_ids_csv(self) -> Path:
        return self.root / "stage_2_sample_submission.csv"


def chosen_ids(ids: Sequence[str], scale: float, rng: np.random.Generator) -> list[str]:
    """All ``ids`` at scale 1, else a random ``scale`` of them (at least 10), in file order."""
    if scale >= 1.0:
        return list(ids)
    count = max(10, round(len(ids) * scale))
    keep = np.sort(rng.choice(len(ids), size=min(count, len(ids)), replace=False))
    return [ids[k] for k in keep]


def rows_of(table_csv: Path, ids: Sequence[str], output_csv: Path) -> Path:
    table = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    table[table["patientId"].isin(set(ids))].to_csv(output_csv, index=False)
    return output_csv


def build_set(root: Path, scale: float, seed: int = 0) -> RsnaSet:
    """Write the RSNA-shaped set (see the module docstring) into ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    labels = pd.read_csv(LABELS_CSV, dtype=str, keep_default_na=False)
    test = pd.read_csv(SAMPLE_SUBMISSION, dtype=str, keep_default_na=False)
    dataset = RsnaSet(root, chosen_ids(labels["patientId"].unique().tolist(), scale, rng),
                      chosen_ids(test["patientId"].tolist(), scale, rng))
    rows_of(LABELS_CSV, dataset.train_ids, dataset.labels_csv)
    rows_of(CLASS_INFO_CSV, dataset.train_ids, dataset.class_info_csv)
    rows_of(SAMPLE_SUBMISSION, dataset.test_ids, dataset.test_ids_csv)
    templates = load_templates()
    number = 0
    for folder, ids in ((dataset.train_dir, dataset.train_ids),
                        (dataset.test_dir, dataset.test_ids)):
        folder.mkdir()
        for patient_id in ids:
            data = copy_dicom(templates[number % len(templates)], patient_id, number)
            (folder / f"{patient_id}.dcm").write_bytes(data)
            number += 1
    check_copy(dataset.test_dir / f"{dataset.test_ids[-1]}.dcm", templates)
    return dataset


def check_copy(path: Path, templates: Sequence[Template]) -> None:
    """A generated file reads as its patient, with UIDs no template has, and decodes."""
    copy = pydicom.dcmread(path)
    assert copy.PatientID == copy.PatientName == path.stem, path
    assert str(copy.SOPInstanceUID).encode() not in {t.uids[2] for t in templates}, path
    assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID, path
    assert copy.pixel_array.shape == (1024, 1024), path


def link_subset(dataset: RsnaSet, count: int, root: Path) -> RsnaSet:
    """The first ``count`` training images (hard links) and their label rows, as a set."""
    ids = dataset.train_ids[:count]
    subset = RsnaSet(root, ids, [])
    subset.train_dir.mkdir(parents=True)
    for patient_id in ids:
        os.link(dataset.train_dir / f"{patient_id}.dcm", subset.train_dir / f"{patient_id}.dcm")
    rows_of(dataset.labels_csv, ids, subset.labels_csv)
    rows_of(dataset.class_info_csv, ids, subset.class_info_csv)
    return subset


# --- measuring a stage -----------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def proportional_set_size(pid: int) -> int:
    """Bytes of memory ``pid`` holds, its shared pages divided among their sharers (0: gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples a process tree's total PSS every ``SAMPLE_SECONDS`` until stopped; ``peak``."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = sum(proportional_set_size(p) for p in process_tree(self.pid))
            self.peak = max(self.peak, total)
            self.done.wait(SAMPLE_SECONDS)


@dataclass
class Stage:
    """One measured stage."""

    name: str
    command: str
    images: int | None = None
    seconds: float = 0.0
    peak_mb: float = 0.0
    largest_mb: float = 0.0
    exit_code: int = 0
    note: str = ""
    log: str = ""

    @property
    def rate(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds else None


@dataclass
class Bench:
    """Runs the stages in ``workdir``, each into ``logs/<n>-<tool>.log``."""

    workdir: Path
    stages: list[Stage] = field(default_factory=list)

    def run(self, name: str, tool: str, args: Sequence, images: int | None = None) -> Stage:
        argv = [str(BIN / tool), *map(str, args)]
        log = self.workdir / "logs" / f"{len(self.stages) + 1:02d}-{tool}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        stage = Stage(name, " ".join([tool, *map(str, args)]), images, log=str(log))
        print(f"\n== {name}\n$ {stage.command}", flush=True)
        with open(log, "w") as output:
            started = time.monotonic()
            child = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)
            sampler = TreeSampler(child.pid)
            sampler.start()
            _, status, usage = os.wait4(child.pid, 0)
            stage.seconds = time.monotonic() - started
            child.returncode = stage.exit_code = os.waitstatus_to_exitcode(status)
            sampler.done.set()
            sampler.join()
        stage.largest_mb = usage.ru_maxrss * 1024 / MB
        stage.peak_mb = max(sampler.peak / MB, stage.largest_mb)
        self.stages.append(stage)
        print(format_row(stage), flush=True)
        if stage.exit_code:
            tail = Path(log).read_text(errors="replace").splitlines()[-25:]
            raise StageFailed(f"{name} exited {stage.exit_code}; the end of {log}:\n"
                              + "\n".join(tail))
        return stage

    def note(self, name: str, seconds: float, images: int, peak_mb: float, note: str = ""):
        stage = Stage(name, "(in the benchmark's process)", images, seconds, peak_mb, peak_mb,
                      note=note)
        self.stages.append(stage)
        print(format_row(stage), flush=True)


class StageFailed(RuntimeError):
    pass


def format_row(stage: Stage) -> str:
    images = f"{stage.images:,}" if stage.images else ""
    rate = f"{stage.rate:.1f}" if stage.rate else ""
    return (f"| {stage.name} | {stage.seconds:.0f} | {images} | {rate} | {stage.peak_mb:,.0f} | "
            f"{stage.largest_mb:,.0f} | {stage.note} |")


def format_table(stages: Sequence[Stage]) -> str:
    lines = ["| stage | seconds | images | images/s | peak memory (MB) | largest process (MB) "
             "| note |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    return "\n".join(lines + [format_row(stage) for stage in stages])


# --- the stages ------------------------------------------------------------------------------


def eval_pass(run_dir: Path) -> str:
    """The evaluator's passes as a note: images and images/s of each (eval/evaluated.json)."""
    done = json.loads((run_dir / "eval" / "evaluated.json").read_text())
    passes = [(r["metrics"]["rsna/images"], r["seconds"]) for r in done.values()
              if "metrics" in r]
    return "; ".join(f"eval pass {images:,.0f} images in {seconds:.0f} s "
                     f"({images / seconds:.1f} images/s)" for images, seconds in passes)


def run_stages(bench: Bench, dataset: RsnaSet, args) -> None:
    work = bench.workdir
    data, runs, out = work / "data", work / "runs", work / "outputs"
    n_train, n_test = len(dataset.train_ids), len(dataset.test_ids)
    bench.run("convert, 5 folds, with class info and headers", "tfod-convert", [
        f"--dicom_dir={dataset.train_dir}", f"--labels_csv={dataset.labels_csv}",
        f"--class_info_csv={dataset.class_info_csv}", f"--headers_csv={HEADERS_CSV}",
        f"--output_dir={data}", "--num_folds=5"], n_train)
    folds = pd.read_csv(data / "folds.csv")
    n_fold = int((folds["fold"] == FOLD).sum())

    run_dir = runs / f"{MODEL}-fold{FOLD}"
    train = bench.run(f"train {args.steps} steps at {args.image_size} px, evaluator on fold "
                      f"{FOLD}", "tfod-train", [
                          f"--model={MODEL}", f"--data_dir={data}", f"--fold={FOLD}",
                          f"--image_size={args.image_size}", "--batch_size=4",
                          f"--num_steps={args.steps}", f"--checkpoint_every={args.steps}",
                          "--log_every=10", f"--run_dir={run_dir}"], n_fold)
    train.note = eval_pass(run_dir)
    bench.run("export", "tfod-export", [f"--run_dir={run_dir}", "--checkpoint=best"])
    test_csv, test_tta_csv = out / "test.csv", out / "test_tta.csv"
    bench.run("predict the test DICOMs", "tfod-predict", [
        f"--model={run_dir}", f"--input={dataset.test_dir}", f"--output={test_csv}"], n_test)
    bench.run("predict the test DICOMs, hflip TTA", "tfod-predict", [
        f"--model={run_dir}", f"--input={dataset.test_dir}", f"--output={test_tta_csv}",
        "--tta=hflip"], n_test)
    val_csv, val_tta_csv = run_dir / "predictions" / "val.csv", out / "val_tta.csv"
    bench.run(f"predict fold {FOLD}'s records, hflip TTA", "tfod-predict", [
        f"--model={run_dir}", f"--input={data}/fold{FOLD}-*.tfrecord",
        f"--output={val_tta_csv}", "--tta=hflip"], n_fold)
    bench.run(f"evaluate fold {FOLD}'s val.csv, with the gallery", "tfod-evaluate", [
        f"--detections={val_csv}", f"--labels_csv={dataset.labels_csv}",
        f"--folds_csv={data / 'folds.csv'}", f"--fold={FOLD}", f"--dicom_dir={dataset.train_dir}",
        f"--output_dir={out / 'metrics'}"], n_fold)
    fit_dir = out / "ensemble"
    bench.run(f"ensemble --fit on fold {FOLD} (without and with TTA)", "tfod-ensemble", [
        f"--detections={val_csv}", f"--detections={val_tta_csv}", "--fit",
        f"--labels_csv={dataset.labels_csv}", f"--fit_dir={fit_dir}"], n_fold)
    bench.run("ensemble the test detections into the submission", "tfod-ensemble", [
        f"--detections={test_csv}", f"--detections={test_tta_csv}",
        f"--params={fit_dir / 'ensemble.json'}", f"--output={out / 'fused_test.csv'}",
        f"--submission={out / 'submission.csv'}", f"--test_ids={dataset.test_ids_csv}"], n_test)

    classifier = runs / "classifier"
    bench.run(f"classify: train 20 steps at 64 px, score fold {FOLD}", "tfod-classify", [
        "--mode=train", f"--data_dir={data}", f"--fold={FOLD}", f"--run_dir={classifier}",
        "--backbone=mobilenetv2", "--image_size=64", "--batch_size=8", "--num_steps=20",
        "--eval_every=20", "--batchnorm_momentum=0.9"], n_fold)
    bench.run("classify: predict the test DICOMs", "tfod-classify", [
        "--mode=predict", f"--model={classifier}", f"--input={dataset.test_dir}",
        f"--output={out / 'test_probabilities.csv'}"], n_test)

    subset = link_subset(dataset, min(CAMPAIGN_IMAGES, n_train), work / "subset")
    subset_data = work / "subset_data"
    bench.run(f"convert a {len(subset.train_ids):,}-image subset, 2 folds", "tfod-convert", [
        f"--dicom_dir={subset.train_dir}", f"--labels_csv={subset.labels_csv}",
        f"--class_info_csv={subset.class_info_csv}", f"--output_dir={subset_data}",
        "--num_folds=2"], len(subset.train_ids))
    bench.run(f"2-fold campaign, {args.campaign_steps} steps per fold, oof.csv", "tfod-train", [
        f"--model={MODEL}", f"--data_dir={subset_data}", "--folds=all",
        f"--image_size={args.image_size}", "--batch_size=4",
        f"--num_steps={args.campaign_steps}", f"--checkpoint_every={args.campaign_steps}",
        f"--log_every={args.campaign_steps}", f"--run_root={runs / 'campaign'}"],
        len(subset.train_ids))
    check_oof(runs / "campaign" / f"{MODEL}-cv" / "oof.csv", subset.train_ids)


# --- the checks ------------------------------------------------------------------------------


def check_submission(path: Path, test_ids: Sequence[str]) -> str:
    """Header, prediction strings, each test id exactly once; raises ``CheckFailed``."""
    try:
        submission = det.read_submission(path)  # header, groups of 5 numbers, no id twice
    except det.FormatError as error:
        raise CheckFailed(f"submission: {error}") from None
    missing, extra = set(test_ids) - set(submission.ids), set(submission.ids) - set(test_ids)
    if missing or extra or len(submission.ids) != len(test_ids):
        raise CheckFailed(f"submission {path}: {len(submission.ids)} ids for {len(test_ids)} "
                          f"test ids; missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}")
    return (f"submission: {len(submission.ids):,} test ids, each once; "
            f"{det.count_boxes(submission):,} boxes")


def check_fused(path: Path, test_ids: Sequence[str]) -> str:
    """The fused test detections (the submission's boxes before the fitted threshold) read
    back as a detections CSV of every test id."""
    try:
        fused = det.read_detections(path)
    except det.FormatError as error:
        raise CheckFailed(f"fused detections: {error}") from None
    if sorted(fused.ids) != sorted(test_ids):
        raise CheckFailed(f"{path} covers {len(fused.ids)} images, not the {len(test_ids)} "
                          "test ids")
    return f"fused test detections: {det.count_boxes(fused):,} boxes"


def check_oof(path: Path, ids: Sequence[str]) -> None:
    oof = det.read_detections(path)
    if sorted(oof.ids) != sorted(ids):
        raise CheckFailed(f"{path} covers {len(oof.ids)} images, not the {len(ids)} of the "
                          "subset")


class CheckFailed(RuntimeError):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the training and test ids (1.0: full size)")
    parser.add_argument("--steps", type=int, default=40, help="detector training steps")
    parser.add_argument("--campaign_steps", type=int, default=10, help="steps per campaign fold")
    parser.add_argument("--image_size", type=int, default=256, help="detector input size")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work here and keep everything (default: a temporary folder)")
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tfod-full-size-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(workdir)
    print(f"{os.cpu_count()} cores; working in {workdir}; console scripts in {BIN}")
    failure = None
    try:
        started = time.monotonic()
        dataset = build_set(workdir / "rsna", args.scale)
        n_images = len(dataset.train_ids) + len(dataset.test_ids)
        size = sum(p.stat().st_size for p in (workdir / "rsna").rglob("*.dcm"))
        bench.note("generate the DICOMs", time.monotonic() - started, n_images,
                   resource_peak_mb(), f"{size / 1e9:.1f} GB")
        run_stages(bench, dataset, args)
        summary = "; ".join([
            check_submission(workdir / "outputs" / "submission.csv", dataset.test_ids),
            check_fused(workdir / "outputs" / "fused_test.csv", dataset.test_ids)])
    except (StageFailed, CheckFailed) as error:
        failure, summary = str(error), ""
    finally:
        print(f"\n{len(bench.stages)} stages, {sum(s.seconds for s in bench.stages):.0f} s in "
              f"all (--scale {args.scale}, --steps {args.steps}, --image_size "
              f"{args.image_size})\n")
        print(format_table(bench.stages))
        (workdir / "full_size.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "cores": os.cpu_count(),
             "stages": [asdict(s) | {"images_per_s": s.rate} for s in bench.stages]}, indent=1))
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if failure:
        print(f"\nFAILED: {failure}")
        return 1
    print(f"\n{summary}; the campaign's oof.csv covers its subset")
    return 0


def resource_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


if __name__ == "__main__":
    sys.exit(main())
