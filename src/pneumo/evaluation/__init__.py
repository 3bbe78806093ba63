"""Metrics with bootstrap intervals, thresholds and calibration, plots and reports."""
