"""Attention at work: the models, training loops, checks and widgets of the application lessons.

One module per application; each builds on the course's own attention code and reads its data
offline through ``attn_course.data``.
"""
