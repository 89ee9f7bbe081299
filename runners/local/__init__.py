"""Local infrastructure from real artifacts: a KRaft Kafka broker, the Beam Flink
job server and the Kafka IO expansion service, fetched from Maven Central."""
