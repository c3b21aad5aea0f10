"""Scan a user's fine-tuning file for poisons: rank examples and find candidate triggers.

``benchmark.scan.runner.run_scan`` runs a scan and ``benchmark.scan.report`` writes its
files. This package imports nothing at import time, so the CLI parser stays fast.
"""
