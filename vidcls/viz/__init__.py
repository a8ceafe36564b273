"""Every picture vidcls draws: timeline plots, annotated videos, confusion matrices, scaling charts.

matplotlib is optional (`vidcls[plot]`); plotting.require_matplotlib says how to install it.
"""
