"""Analysis: what is derived from committed rows — summaries (summarize), binned timelines
(timeline, timeline_stream), segments decoded from them (segments), suspect tracks (suspect),
plots, the HTML report (report, report_facts), annotated frames and videos (annotate), the run's
derived tables (derive) and the read-side commands (commands); columns holds the helpers on
probability columns they share.

May import: output, media (to read frames), model, tta, config and below. Never engines,
training or the pipeline.
"""
