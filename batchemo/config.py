"""Configs: each option's default, bound and help text live here, once; the CLI is generated from them.

Precedence: command-line flag, then job file (TOML), then the default below (options.py reads
job files and checks values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from batchemo.choices import (
    ARCHS,
    AUGMENTS,
    DEGRADATIONS,
    DETECTORS,
    ENGINES,
    LABELS,
    PRECISIONS,
    SMOOTHING,
    TRAIN_PRECISIONS,
)
from batchemo.options import actor_range, opt


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "batchemo"


@dataclass
class TrainConfig:
    data: Path = opt(None, "Training data: a folder-per-class tree (root/<class>/*, or root/train/"
                     "<class> with optional val/ and test/), the FER2013 CSV, or an .npz written "
                     "by batchemo.datasets.save_npz.", short="-d")
    out: Path = opt(Path("model.keras"), "Where to write the model artifact (.keras + .json card).",
                    short="-o")
    arch: str = opt("default", "Architecture: 'default' (48x48 VGG-BN) or 'seed' (the seed "
                    "document's 128x128 two-conv net, a reference baseline).",
                    choices=ARCHS)
    classes: list[str] = opt([], "Train on these classes only, in this order (comma-separated, "
                             "e.g. angry,disgust,fear,happy,sad,surprise). Default: all found.")
    val: Path | None = opt(None, "Validation folder tree for checkpoint choice and early stopping "
                           "(default: data's val/ if present, else a stratified part of train).")
    val_only: str | None = opt(None, "Use only validation files whose name matches this glob, "
                               "e.g. 'PublicTest_*'.")
    val_split: float = opt(0.1, "Fraction of each training class held out for validation when "
                           "no validation folder is given.", min=0.01, max=0.5)
    test: Path | None = opt(None, "Test folder tree, scored once at the end and recorded in the "
                            "card; it never chooses anything (default: data's test/ if present).")
    test_only: str | None = opt(None, "Score only test files whose name matches this glob, e.g. "
                                "'PrivateTest_*'.")
    init: Path | None = opt(None, "Start from the weights of this artifact (same architecture and "
                            "classes) to continue or fine-tune it; its card is recorded in the "
                            "new one.")
    teachers: list[Path] = opt([], "Distil from these artifacts (same classes and input size; "
                               "repeat for several): the student learns from their mean "
                               "prediction on the same augmented face, mixed with the labels "
                               "by --distill. They run frozen, beside the student.",
                               multiple=True)
    soup: list[Path] = opt([], "Instead of training: average the weights of these artifacts, "
                           "each fine-tuned from --init (repeat for several; e.g. one recipe, "
                           "several seeds): a uniform model soup (Wortsman et al., 2022). "
                           "--keep-init then mixes the start back and the model is finished as "
                           "a trained one is.", multiple=True)
    distill: float = opt(0.75, "With --teachers: the teachers' share of the training target "
                         "(the rest is the smoothed label).", min=0.0, max=1.0)
    degrade: float = opt(0.0, "Video-grade degradation of training faces: the chance that a "
                         "face is downscaled to 12-48 px and back; JPEG (q20-90), blur, noise and "
                         "gamma/contrast follow at proportional rates (0 = off). With --teachers "
                         "only the student sees the degraded face; the teachers see it clean.",
                         min=0.0, max=1.0)
    # Issue 31 item 3: what faces in talking-head and crowd video add (augment.FaceVideo). Like
    # --degrade, only the student sees them when there are teachers.
    occlude: float = opt(0.0, "Chance that a training face's lower face (mouth and chin) is "
                         "covered with its mean grey or blurred away, so brows and eyes carry "
                         "weight (0 = off).", min=0.0, max=1.0)
    motion_blur: float = opt(0.0, "Chance that a training face is motion-blurred (a box blur "
                             "over 3-13 px, vertical three times in four; 0 = off).",
                             min=0.0, max=1.0)
    pitch: float = opt(0.0, "Chance that a training face is turned -5 to 25 degrees down, as "
                       "walkers' and readers' faces are (evaluate's `pitch` is 20; 0 = off).",
                       min=0.0, max=1.0)
    soft_labels: Path | None = opt(None, "A votes CSV (`file` + one count column per class, e.g. "
                                   "FER+'s ferplus_votes.csv): each face's vote distribution is "
                                   "mixed into its label target by --soft-weight.")
    soft_weight: float = opt(0.5, "With --soft-labels: the votes' share of the label target (the "
                             "rest is the folder's label).", min=0.0, max=1.0)
    keep_init: float = opt(0.0, "With --init: after training, mix this share of the starting "
                           "weights back in (weight-space interpolation, as WiSE-FT does): keeps "
                           "more of the start's clean accuracy at some cost to what the "
                           "fine-tuning taught. BatchNorm statistics and the temperature are "
                           "fitted after the mix.", min=0.0, max=0.99)
    int8: bool = opt(False, "Also write an int8 copy of the model beside it (name.int8.tflite, "
                     "activation ranges from 500 training faces) for `run --precision int8`: "
                     "about a quarter of the CPU per face, probabilities slightly different.")
    calibrate: bool = opt(True, "Fit one softmax temperature on the validation split after "
                          "training (minimum log-loss, flip TTA as `run` uses it) and fold it into "
                          "the output layer; the card records it.")
    epochs: int = opt(45, "Training epochs (the cosine learning-rate schedule spans them all).",
                      min=1, max=10000)
    batch_size: int = opt(128, "Training batch size.", min=1, max=4096)
    lr: float | None = opt(None, "Peak learning rate (default: 0.1 for 'default', SGD with "
                           "Nesterov momentum and a cosine schedule; 0.001 for 'seed', Adam).",
                           min=1e-6, max=10.0)
    weight_decay: float = opt(5e-3, "Decoupled weight decay (SGD).", min=0.0, max=1.0)
    label_smoothing: float = opt(0.1, "Label smoothing.", min=0.0, max=0.5)
    class_weighting: bool = opt(True, "Weight classes by inverse square-root frequency "
                                "(lifts FER2013's rare 'disgust').")
    precision: str = opt("auto", "Training precision: auto = mixed_bfloat16 where the CPU has "
                         "bf16 natively (measured 2x faster than float32 there), else float32 "
                         "(emulated bf16 is slow and trained worse); the artifact is always "
                         "float32.", choices=TRAIN_PRECISIONS)
    augment: str = opt("layers", "Training augmentation for 'default' (flip, rotation, zoom, "
                       "shift): Keras's preprocessing layers, or the same as one batched "
                       "resampling (gather: one interpolation instead of three, no per-image "
                       "work; for GPU backends, where the layers ran at CPU speed).",
                       choices=AUGMENTS)
    seed: int = opt(1337, "Random seed (weights, shuffling, augmentation, splits).", min=0,
                    max=2**32 - 1)  # NumPy's seeds are 32-bit
    work_dir: Path | None = opt(None, "Checkpoints and backups, so a killed training resumes "
                                "(default: ~/.cache/batchemo/train/<out name>).")
    license: str = opt("", "Terms of the training data, recorded in the model card.")
    limits: str = opt("", "Known limits of the model, recorded in the model card.")
    tta: bool = opt(True, "Score the final model with horizontal-flip test-time augmentation for "
                    "the faces it is unsure of (top probability under 0.8), and fit its "
                    "temperature so (recorded in the card; `run` uses it too when the card says "
                    "so).")

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else cache_dir() / "train" / Path(self.out).stem


@dataclass
class EvaluateConfig:
    data: Path = opt(None, "Folder-per-class tree (or FER2013 CSV: its PrivateTest rows) to score.",
                     short="-d")
    model: Path | None = opt(None, "Model artifact (default: the shipped FER2013 model).",
                             short="-m")
    only: str | None = opt(None, "Score only files whose name matches this glob, e.g. "
                           "'PrivateTest_*'.")
    out: Path | None = opt(None, "Folder for report.json, confusion.csv, confusion.png, "
                           "per_class.csv.", short="-o")
    tta: bool = opt(True, "Average predictions over the face and its mirror image where the model "
                    "is unsure, as `run` does (the card's threshold; every face for older cards).")
    batch_size: int = opt(256, "Inference batch size.", min=1, max=8192)
    # auto by default, resolved by model.load_model as `run` resolves it (issue 29): evaluate
    # then scores what `run` predicts with on this machine, and the report says which it was.
    precision: str = opt("auto", "Inference precision: auto (as `run` chooses on this machine: "
                         "bfloat16 where the CPU has it natively and it is faster, else the "
                         "model's int8 copy where it has one, else float32; the report's "
                         "`precision` says which), float32 (the reference), bfloat16 or int8.",
                         choices=PRECISIONS)
    degrade: list[str] = opt([], "Also score the faces degraded as small or compressed faces in "
                             "video are (repeat for several): Npx = downscaled to NxN (area) and "
                             "back (linear), jpegQ = JPEG at quality Q, mouth = rows 32-47, "
                             "columns 10-37 (of 48) filled with the face's mean grey, motion = "
                             "vertical box blur of 9 px, pitch = the face turned 20 degrees down "
                             "(evaluate.pitch_homography); reports accuracy kept as a share of "
                             "clean and each class's predicted-share growth.",
                             multiple=True, choices=DEGRADATIONS)
    labels: str = opt("original", "Score against the folders' labels, or the FER+ majority of "
                      "10 annotators (--votes; ties and majorities for contempt, unknown or "
                      "not-a-face are left out).", choices=LABELS)
    votes: Path | None = opt(None, "Votes CSV for --labels ferplus (default: ferplus_votes.csv "
                             "in the data folder or one above it).")


@dataclass
class RunConfig:
    input: list[Path] = opt([], "Input root: a directory (scanned recursively) or a file. Repeat "
                            "for several roots.", short="-i", multiple=True)
    out: Path = opt(Path("results.parquet"), "Faces table: .parquet or .csv (companion tables "
                    "beside it as <stem>.<table>.<ext>), or a directory for a Parquet dataset.",
                    short="-o")
    include: list[str] = opt([], "Only files whose relative path matches this glob (repeatable).",
                             multiple=True)
    exclude: list[str] = opt([], "Skip files whose relative path matches this glob (repeatable).",
                             multiple=True)
    fps: float = opt(5.0, "Video frames sampled per second of video time; 0 = every frame.",
                     min=0.0, max=1000.0)
    detector: str = opt("blazeface-full", "Face detector: blazeface-full (small and distant faces "
                        "too), blazeface (close-up faces, fastest), haar (OpenCV 4). Measured "
                        "recall and speed are in docs/speed.md.",
                        choices=DETECTORS)
    min_face: int = opt(20, "Ignore faces narrower than this many pixels.", min=1, max=10000)
    score_threshold: float = opt(0.5, "Minimum detector score for a face.", min=0.0, max=1.0)
    model: Path | None = opt(None, "Model artifact (.keras with its .json card); default: the "
                             "shipped FER2013 model.", short="-m")
    batch_size: int = opt(64, "Faces per model call (crops from many frames and files).",
                          min=1, max=4096)
    tta: bool = opt(True, "Average each face the model is unsure of (top probability under the "
                    "card's threshold, 0.8) with its mirror image (+accuracy, about 1.5x model "
                    "time); used only if the model's card enables it.")
    precision: str = opt("auto", "Inference precision: auto = bfloat16 where the CPU has it natively "
                         "(AVX512-BF16/AMX) and a one-off timing, cached in ~/.cache/batchemo/"
                         "precision.json, found it 1.25x faster (FER2013 accuracy unchanged; see "
                         "docs/speed.md); else int8, the model's int8 copy through LiteRT (a "
                         "quarter of float32's CPU per face, no TensorFlow import, the same "
                         "accuracy within noise), or float32 for a model without one; or force "
                         "float32, bfloat16 or int8. An output keeps what its first run chose.",
                         choices=PRECISIONS)
    workers: int = opt(-1, "Decode/detect worker processes; 0 = in the main process; -1 = auto "
                       "(one per CPU core beyond the one running the model, at least 1). With "
                       "--engine ray: at most this many decode/detect tasks at once (0 or -1: "
                       "as many as the cluster's CPUs hold).",
                       min=-1, max=256)
    engine: str = opt("local", "Execution engine: 'local' (this machine) or 'ray' (Ray Data).",
                      choices=ENGINES)
    ray_address: str | None = opt(None, "Ray cluster for --engine ray: HOST:PORT of its head, "
                                  "'auto' (the cluster started on this machine) or 'local' "
                                  "(default: RAY_ADDRESS, as `ray job submit` sets it, else a "
                                  "private local Ray for this run).")
    ray_actors: str = opt("auto", "Model actors for --engine ray: MIN..MAX (Ray Data adds actors "
                          "up to MAX while inference is the bottleneck), N (a fixed pool), or "
                          "auto = 1..one per 4 CPUs of the cluster (with --ray-gpus: 1..as many "
                          "as its GPUs hold).", check=actor_range)
    ray_gpus: float = opt(0.0, "GPUs per model actor for --engine ray (e.g. 1, or 0.5 for two "
                          "actors per GPU); 0 = inference on CPUs.", min=0.0, max=64.0)
    force: bool = opt(False, "Reprocess every file, and accept a model different from the one "
                      "the output was made with.")
    retry_errors: bool = opt(False, "Retry files that failed in an earlier run.")
    prune_deleted: bool = opt(False, "Drop rows of files that no longer exist under their root "
                              "(default: keep them, marked in the files table).")
    wait: float = opt(0.0, "If another run holds the output's lock, wait up to this many seconds "
                      "(0 = exit 3 at once).", min=0.0)
    plots: Path | None = opt(None, "Write per-video timeline PNGs and a run chart to this folder.")
    timeline_bin: float = opt(1.0, "Timeline bin width in seconds.", min=0.01)
    segment_switch_cost: float = opt(
        6.0, "Evidence, in nats, a change of emotion must gather to cut a segment (about 2 per "
        "face at p 0.8 against 0.1; 0 = cut at every change of the top class). Chosen on the "
        "shared clips: see docs/readings.md.", min=0.0)
    quiet: bool = opt(False, "No progress bars or info logs (the closing summary line is kept).")
    log_json: bool = opt(False, "Log machine-readable JSON lines on stderr.")


@dataclass
class TimelineConfig:
    results: Path = opt(None, "The faces table written by `batchemo run` (its companions are "
                        "found beside it).")
    out: Path | None = opt(None, "Where to write the timeline (.parquet or .csv; default: "
                           "<stem>.timeline.<ext> beside the results).", short="-o")
    bin: float = opt(1.0, "Bin width in seconds.", min=0.01)
    smoothing: str = opt("ema", "Smoothing of per-bin probabilities: ema (causal, exponential), "
                         "median (centred rolling median) or none.",
                         choices=SMOOTHING)
    window: float = opt(3.0, "Smoothing window in seconds.", min=0.0)
    segments_out: Path | None = opt(None, "Also write the segments table (runs of one dominant "
                                    "emotion per track) here.")
    min_segment: float = opt(1.0, "Merge segments shorter than this many seconds into a "
                             "neighbour.", min=0.0)
    segment_switch_cost: float = opt(
        6.0, "Evidence, in nats, a change of emotion must gather to cut a segment (about 2 per "
        "face at p 0.8 against 0.1; 0 = cut at every change of the top class). Chosen on the "
        "shared clips: see docs/readings.md.", min=0.0)


@dataclass
class SummaryConfig:
    results: Path = opt(None, "The faces table written by `batchemo run`.")
    out: Path | None = opt(None, "Also write the summary table here (.parquet or .csv).",
                           short="-o")
    level: list[str] = opt([], "Levels to print (repeatable): run, folder, file, track.",
                           multiple=True)
    min_track: float = opt(0.0, "Leave out track rows on screen for less than this many seconds.",
                           min=0.0)


@dataclass
class ReportConfig:
    results: Path = opt(None, "The faces table written by `batchemo run`.")
    out: Path = opt(Path("report.html"), "The self-contained HTML page to write.", short="-o")
    title: str = opt("batchemo report", "Page title.")
    min_track: float = opt(0.0, "Fold away tracks on screen for less than this many seconds "
                           "(listed, not shown in full).", min=0.0)


@dataclass
class AnnotateConfig:
    results: Path = opt(None, "The faces table written by `batchemo run`.")
    out: Path = opt(Path("annotated"), "Folder for the annotated frames (JPEG) and videos.",
                    short="-o")
    source: list[str] = opt([], "Only sources whose relative path matches this glob "
                            "(repeatable).", multiple=True)
    every: float = opt(1.0, "Annotate the first sampled frame of every this many seconds of "
                       "video (0 = every sampled frame).", min=0.0)
    changes: bool = opt(False, "Instead of --every: only the frames where a track's dominant "
                        "emotion changes (the first face of each segment).")
    video: bool = opt(False, "Also write each video whole with its boxes drawn (VP8 WebM; "
                      "MPEG-4 where VP8 is missing).")
    quality: int = opt(85, "JPEG quality of the frames.", min=10, max=100)
