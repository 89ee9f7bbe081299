"""Facts shared by the producer, the pipeline and serving: topics, defaults, schemas, codec."""
