"""Analysis: what is derived from committed rows — summaries (summarize), binned timelines and
segments (timeline, timeline_stream), suspect tracks (suspect), plots, the HTML report, annotated
frames and videos (annotate), the run's derived tables (derive) and the read-side commands
(commands); columns holds the helpers on probability columns they share.

May import: output, media (to read frames), model, tta, config and below. Never engines,
training or the pipeline.
"""
