"""Output: storage only — table schemas and writers (tables), atomic writes (atomic), what is done
(ledger: the SQLite state, lock), per-file staged parts and their rebuild (store), and reading a
run's tables back (read).

May import: errors, choices, records, config, _util. Never media, analysis, engines or the pipeline.
"""
