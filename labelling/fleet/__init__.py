"""A group's life against the store: the MongoDB manifest, partitions claimed and labelled, exports and reports.

Rule: the fleet persists and schedules; it labels only through ``method``'s labeller and never touches the engine's
internals. It imports the package root, ``engine`` (model files only) and ``method``, never ``bench``; Celery and the
CLI live outside the package (``tasks/``, ``cli/``) and import the fleet, not the other way round.
"""
