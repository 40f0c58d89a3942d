"""The models `fit` trains when the student does not train alone: distillation from frozen
teachers on the very faces the student sees, and --degrade's degradations in front of it."""

from __future__ import annotations

from batchemo.config import TrainConfig
from batchemo.errors import ConfigError
from batchemo.model import ARCHS, INPUT_SIZE, load_model, rebuild


def distiller(keras, student, cfg: TrainConfig, classes: tuple[str, ...]):
    """(a model training `student`, the teachers' cards). The faces are augmented once and fed
    to the student and to the frozen teachers, so the target is (1 - distill) x the smoothed label
    + distill x the teachers' mean prediction on the very face the student sees."""
    ops = keras.ops
    teachers, cards = [], []
    for i, path in enumerate(cfg.teachers):
        source = load_model(path)
        if source.meta.get("arch") not in ARCHS:
            raise ConfigError(f"--teachers {path}: not one of batchemo's architectures")
        if source.classes != tuple(classes) or source.input_size != INPUT_SIZE[cfg.arch]:
            raise ConfigError(f"--teachers {path}: it takes {source.input_size}px faces of "
                              f"classes {', '.join(source.classes)}; this training takes "
                              f"{INPUT_SIZE[cfg.arch]}px faces of {', '.join(classes)}")
        # Rebuilt without augmentation layers, in the training precision: as loaded (Keras's
        # augmentation layers inside, float32) a JAX step on an H200 took 1.06 s, rebuilt 6.8 ms.
        teacher = rebuild(source.keras_model, source.meta["arch"], len(classes),
                          keras.config.dtype_policy().name, augment="none")
        teacher.trainable = False
        teacher.name = f"teacher_{i}"  # every build is named batchemo_<arch>
        teachers.append(teacher)
        cards.append(provenance(source.meta))

    class Distil(keras.layers.Layer):
        """Passes the student's probabilities on; adds distill x cross-entropy to the guess."""

        def call(self, probs, guess):
            guess = ops.stop_gradient(ops.cast(guess, "float32"))
            ce = keras.losses.categorical_crossentropy(guess, ops.cast(probs, "float32"))
            self.add_loss(cfg.distill * ops.mean(ce))
            return probs

    class TeachersGuess(keras.layers.Layer):
        """The teachers' mean prediction, always in inference mode. A functional model hands its
        own `training` flag to every layer whose call takes one, overriding an explicit
        training=False, so teachers called directly in the graph ran with dropout on while the
        student trained, and guessed one class for every face (issue 29 item 1). This call takes
        no `training`, and its explicit training=False reaches the teachers."""

        def __init__(self, models, **kwargs):
            super().__init__(**kwargs)
            self.models = models

        def call(self, faces):
            return ops.mean(ops.stack([t(faces, training=False) for t in self.models]), axis=0)

    from batchemo.training.augment import augmentation

    inputs = keras.Input(student.input_shape[1:], name="face")
    x = inputs
    for layer in augmentation(cfg.augment if cfg.arch == "default" else "none"):
        x = layer(x)
    guess = TeachersGuess(teachers, trainable=False)(x)
    seen = degraded(cfg, x)  # the teachers see the clean face
    return keras.Model(inputs, Distil(dtype="float32")(student(seen), guess)), cards


def degrader(cfg: TrainConfig):
    from batchemo.training.augment import FaceDegrade

    d = cfg.degrade  # the other degradations follow the resize rate
    return FaceDegrade(p_resize=d, p_jpeg=0.8 * d, p_blur=0.3 * d, p_noise=0.4 * d,
                       p_tone=0.6 * d, seed=cfg.seed)


def video_degrader(cfg: TrainConfig):
    """--pitch, --occlude and --motion-blur as one FaceVideo layer, or None when all are off."""
    from batchemo.training.augment import FaceVideo

    if not (cfg.pitch or cfg.occlude or cfg.motion_blur):
        return None
    return FaceVideo(p_pitch=cfg.pitch, p_mouth=cfg.occlude, p_motion=cfg.motion_blur,
                     seed=cfg.seed + 1)  # draws of its own, not FaceDegrade's


def degraded(cfg: TrainConfig, x):
    """Faces `x` (a Keras tensor) as the student sees them: turned, occluded and motion-blurred
    (FaceVideo), then --degrade's resizing, JPEG, blur, noise and tone (FaceDegrade), as a
    camera would record a moving face; `x` itself where all are off."""
    video = video_degrader(cfg)
    if video is not None:
        x = video(x)
    return degrader(cfg)(x) if cfg.degrade else x


def degrading(keras, model, cfg: TrainConfig):
    """`model` behind the video augmentations and --degrade's degradations (the model itself
    unchanged), or `model` if all are off."""
    if not (cfg.degrade or cfg.pitch or cfg.occlude or cfg.motion_blur):
        return model
    inputs = keras.Input(model.input_shape[1:], name="face")
    return keras.Model(inputs, model(degraded(cfg, inputs)))


def provenance(meta: dict, shallow: bool = False) -> dict:
    """What a card records of an artifact it started from or learnt from: its identity, its
    headline metrics (the full ones are in its own card) and, in turn, its provenance; `shallow`
    names the models it came from by id only (for soup members, whose start is the soup's own)."""
    keep = ("model_id", "arch", "classes", "seed", "epochs_trained", "initialised_from",
            "distilled_from")
    out = {k: meta[k] for k in keep if k in meta}
    if shallow and out.get("initialised_from"):
        out["initialised_from"] = out["initialised_from"]["model_id"]
    if shallow and out.get("distilled_from"):
        out["distilled_from"] = {**out["distilled_from"], "teachers": [
            t["model_id"] for t in out["distilled_from"]["teachers"]]}
    for split in ("validation", "test"):
        if split in meta:
            out[split] = {k: meta[split][k] for k in ("n", "accuracy", "macro_f1", "split")
                          if k in meta[split]}
    return out
