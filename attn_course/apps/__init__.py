"""Attention at work: the models, recipes and metrics of the application lessons (09-15).

One module per application; each builds on the course's own attention code, trains with
``attn_course.training.fit`` and reads its data offline through ``attn_course.data``. No application
imports another. Their checks live in ``attn_course.checks``, their widgets in ``attn_course.widgets``.
"""
