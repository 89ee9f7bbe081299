package org.apache.beam.sdk.io.kafka;

import java.util.Optional;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.joda.time.Duration;
import org.joda.time.Instant;

/**
 * Kafka CreateTime as event time, with a watermark that idle partitions do not hold back.
 *
 * <p>Like KafkaIO's CustomTimestampPolicyWithLimitedDelay: the watermark of a partition is the
 * largest record timestamp read minus {@code maxDelay}, capped at now minus {@code maxDelay}; when
 * the reader has caught up with the partition (no backlog), it follows the time of the backlog
 * check minus {@code maxDelay}. Unlike it, a partition that has not delivered a single record yet
 * also follows that clock once its end offset is known, so a topic with a silent partition does
 * not hold every window open forever (apache/beam#20908).
 */
class IdleAwareCreateTimePolicy<K, V> extends TimestampPolicy<K, V> {
  private final Duration maxDelay;
  private Instant maxEventTimestamp;

  IdleAwareCreateTimePolicy(Duration maxDelay, Optional<Instant> previousWatermark) {
    this.maxDelay = maxDelay;
    this.maxEventTimestamp = previousWatermark.orElse(BoundedWindow.TIMESTAMP_MIN_VALUE);
  }

  @Override
  public Instant getTimestampForRecord(PartitionContext ctx, KafkaRecord<K, V> record) {
    if (record.getTimestampType() != KafkaTimestampType.CREATE_TIME) {
      throw new IllegalArgumentException(
          String.format(
              "record %s/%d@%d has timestamp type %s, not CreateTime",
              record.getTopic(), record.getPartition(), record.getOffset(),
              record.getTimestampType()));
    }
    Instant timestamp = new Instant(record.getTimestamp());
    if (timestamp.isAfter(maxEventTimestamp)) {
      maxEventTimestamp = timestamp;
    }
    return timestamp;
  }

  @Override
  public Instant getWatermark(PartitionContext ctx) {
    Instant now = Instant.now();
    if (maxEventTimestamp.isAfter(now)) {
      return now.minus(maxDelay); // timestamps from the future: trust the clock instead
    }
    Instant checked = ctx.getBacklogCheckTime();
    boolean caughtUp = ctx.getMessageBacklog() == 0 && checked.getMillis() > 0;
    if (caughtUp && checked.minus(maxDelay).isAfter(maxEventTimestamp)) {
      return checked.minus(maxDelay);
    }
    return maxEventTimestamp.minus(maxDelay);
  }
}
