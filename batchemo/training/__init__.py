"""Training: datasets (FER2013 folders, CSV, .npz, FER+ votes), augment (training-time layers),
train (fit, distil, calibrate, save an artifact) and evaluate (scores, degradations, ECE).

May import: model, tta, output, config and below. Never media, engines, analysis or the pipeline.
"""
