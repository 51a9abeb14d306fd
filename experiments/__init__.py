"""Experiments: one folder per question, each with its README, commands and results.

Scripts that import their neighbours run as modules from the repository root, e.g.
`python -m experiments.gpu_speed.benchmark`; the others also run as plain scripts.
"""
