"""What each runner needs: local infrastructure, Flink cluster and Dataflow submission."""
