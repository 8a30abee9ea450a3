"""The Celery side of the labelling fleet: the app (``tasks.app``), the partition tasks and the run chord
(``tasks.partition``), and the same chord executed in process when there is no broker (``tasks.local``).

Dependencies point one way: ``cli`` imports this package, and this package imports ``labelling``, never the reverse.
"""
