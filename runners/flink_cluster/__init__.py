"""A Flink 1.19 session cluster on this machine without Docker (JobManager,
TaskManagers and Beam's Python worker pool as background processes), and the
pipeline arguments that submit a Beam pipeline to it. See docs/flink_cluster.md."""
