"""Imported once by the grading server (a multiprocessing forkserver) before it forks one process per submission.

Every submission would otherwise spend most of its time importing torch, matplotlib, IPython,
ipywidgets and otter-grader; forked from a process that already holds them, it starts at once.
Importing this module has those side effects on purpose, and arms the reference tripwire
(``attn_course.checks.tripwire``) before any learner's code can run.
"""
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per job: jobs run side by side, and fork needs one thread
os.environ.setdefault("MPLBACKEND", "agg")
# jsonschema imports rfc3987_syntax when it is installed, which compiles a grammar for about 3 s;
# nbformat never validates IRIs, so grading does without it.
sys.modules.setdefault("rfc3987_syntax", None)

import IPython.core.interactiveshell  # noqa: E402,F401
import ipywidgets  # noqa: E402,F401
import matplotlib.pyplot  # noqa: E402,F401
import matplotlib_inline.backend_inline  # noqa: E402,F401
import nbconvert.preprocessors  # noqa: E402,F401
import otter  # noqa: E402,F401
import otter.execute  # noqa: E402,F401
import otter.run.run_autograder.runners.python_runner  # noqa: E402,F401
import torch  # noqa: E402,F401

import attn_course  # noqa: E402,F401
import attn_course.broken  # noqa: E402,F401
import attn_course.checks  # noqa: E402,F401
import attn_course.plot  # noqa: E402,F401
import attn_course.widgets  # noqa: E402,F401
from attn_course.checks import tripwire  # noqa: E402
from attn_course.grading import job  # noqa: E402,F401

tripwire.enable()
