"""Media: one module per stage of a file's way to face crops — scan (find files), decode (frames
by time), detect (face boxes), crop (aligned 48×48 faces), extract (the per-file loop of those
stages in a worker), shotcuts (hard cuts seen while decoding), track (faces linked into tracks),
matroska (which tracks a Matroska/WebM file holds, for scan).

May import: errors, choices, records, _util. Never output, analysis, engines or the pipeline.
"""
