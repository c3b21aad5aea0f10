"""Experiment configuration, the end-to-end pipeline and its reports."""
