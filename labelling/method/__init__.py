"""The labelling method of ``docs/method.md``: prompts, sampling candidates, the noisy channel, retrieval, parsing.

Rule: the method turns turns into labels through the engine and knows nothing of where turns and labels are stored. It
imports the package root and ``engine``, never ``fleet`` or ``bench``. :class:`labelling.method.labeller.PartitionLabeller`
is its entry point, and :mod:`labelling.method.build` loads the models once per process and builds one.
"""
