"""Reproducible comparisons of spaceport with rclone and rsync: ``python -m benchmarks.run``."""
