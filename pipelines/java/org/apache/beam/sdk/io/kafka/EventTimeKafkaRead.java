package org.apache.beam.sdk.io.kafka;

import java.util.Collections;
import java.util.Map;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.joda.time.Duration;

/**
 * The cross-language "read with metadata" of KafkaIO, with {@link IdleAwareCreateTimePolicy}.
 *
 * <p>Python's ReadFromKafka can only pick ProcessingTime, CreateTime (no delay, and a partition
 * without records holds the watermark) or LogAppendTime. This registers a second URN taking the
 * same configuration plus {@code max_delay_ms}, and builds the same KafkaIO read (so the same
 * Row output, checkpointing and offset commits) with the idle-aware policy. It lives in KafkaIO's
 * package because the builders it reuses are package-private.
 */
public class EventTimeKafkaRead implements ExternalTransformRegistrar {
  public static final String URN = "beam:transform:market-data:kafka_read_event_time:v1";

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** KafkaIO's external read configuration plus the watermark delay. */
  public static class Configuration extends KafkaIO.Read.External.Configuration {
    private Long maxDelayMs = 0L;

    public void setMaxDelayMs(Long maxDelayMs) {
      this.maxDelayMs = maxDelayMs;
    }
  }

  static class Builder
      implements ExternalTransformBuilder<Configuration, PBegin, PCollection<Row>> {
    @Override
    public PTransform<PBegin, PCollection<Row>> buildExternal(Configuration config) {
      return new KafkaIO.RowsWithMetadata<>(readSpec(config));
    }
  }

  /**
   * KafkaIO's read as the external configuration describes it, with the idle-aware CreateTime
   * policy; {@link KafkaRecordBatchRead} reads through the same spec.
   */
  static KafkaIO.Read<byte[], byte[]> readSpec(Configuration config) {
    KafkaIO.Read.Builder<byte[], byte[]> builder = new AutoValue_KafkaIO_Read.Builder<>();
    KafkaIO.Read.Builder.setupExternalBuilder(builder, config);
    Duration maxDelay = Duration.millis(config.maxDelayMs == null ? 0L : config.maxDelayMs);
    builder.setTimestampPolicyFactory(
        (partition, previousWatermark) ->
            new IdleAwareCreateTimePolicy<>(maxDelay, previousWatermark));
    return builder.build();
  }
}
