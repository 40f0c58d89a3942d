"""The choice lists of the options, in one place: config.py offers and validates them, the
modules that implement them import them from here."""

DETECTORS: tuple[str, ...] = ("blazeface", "blazeface-full", "haar")
ENGINES = ("local", "ray")
ARCHS = ("default", "seed")
PRECISIONS = ("auto", "float32", "bfloat16", "int8")  # inference (run, evaluate)
TRAIN_PRECISIONS = ("auto", "float32", "mixed_bfloat16")
AUGMENTS = ("layers", "gather")
DEGRADATIONS = ("24px", "16px", "jpeg30", "16px+jpeg30", "mouth", "motion", "pitch")
LABELS = ("original", "ferplus")
SMOOTHING = ("ema", "median", "none")
