"""Reporting: run directories, evaluation metrics, plots and the report."""
