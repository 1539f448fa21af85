"""Fit the model to the machine: detect the hardware, the catalog of Qwen 3.5 variants and
their sources (data), the planner that picks a variant and precision, and `doctor`'s report.
"""
