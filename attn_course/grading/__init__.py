"""The classroom grader: a folder of submitted notebooks -> ``grades.csv`` and one feedback file each.

``cli`` (the ``attn-course`` command) -> ``grader`` (discover, schedule, report) -> ``job`` (one
submission, otter-grader's runner) inside ``sandbox``; ``assign`` builds student notebooks and
autograders from ``solutions/``; ``submissions`` finds the files and their lessons; ``report`` writes
the CSV, the feedback and the summary; ``preload`` is what the grading server imports once.
Nothing below this package imports it.
"""
