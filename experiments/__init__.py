"""Entry points of metriclearn: absl-flag scripts and the ``reproduce`` main job."""
