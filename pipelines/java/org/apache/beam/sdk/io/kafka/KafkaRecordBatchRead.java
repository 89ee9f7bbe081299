package org.apache.beam.sdk.io.kafka;

import static org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.base.Preconditions.checkArgument;

import java.util.Collections;
import java.util.Map;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.options.ExperimentalOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.clients.consumer.ConsumerConfig;

/**
 * KafkaIO's read handed to the SDK as batches of records in one byte[] each.
 *
 * <p>A cross-language read that yields one schema Row per record costs the Python side a Row
 * decode per tick; this one yields one element per batch of up to {@code max_batch_records}
 * records of one partition (format in {@link KafkaRecordBatchSource}), which Python parses in one
 * call. The source is {@link KafkaUnboundedSource} built from the same spec as {@link
 * EventTimeKafkaRead} (consumer config, idle-aware CreateTime watermark, offsets committed when a
 * checkpoint is finalized), split into one reader per partition.
 *
 * <p>Runners that do not run UnboundedSources natively (no {@code use_deprecated_read}, e.g.
 * Dataflow) get KafkaIO's own splittable-DoFn read with each record as a batch of one, without a
 * read watermark: the same element type, only without the batching.
 */
public class KafkaRecordBatchRead implements ExternalTransformRegistrar {
  public static final String URN = "beam:transform:market-data:kafka_read_batches:v1";
  static final int DEFAULT_MAX_BATCH_RECORDS = 2000;

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** {@link EventTimeKafkaRead}'s configuration plus the largest batch. */
  public static class Configuration extends EventTimeKafkaRead.Configuration {
    private Long maxBatchRecords = (long) DEFAULT_MAX_BATCH_RECORDS;

    public void setMaxBatchRecords(Long maxBatchRecords) {
      this.maxBatchRecords = maxBatchRecords;
    }
  }

  static class Builder
      implements ExternalTransformBuilder<Configuration, PBegin, PCollection<byte[]>> {
    @Override
    public PTransform<PBegin, PCollection<byte[]>> buildExternal(Configuration config) {
      long maxBatch =
          config.maxBatchRecords == null ? DEFAULT_MAX_BATCH_RECORDS : config.maxBatchRecords;
      checkArgument(
          maxBatch > 0 && maxBatch <= Integer.MAX_VALUE, "max_batch_records must be positive");
      return new ReadBatches(EventTimeKafkaRead.readSpec(config), (int) maxBatch);
    }
  }

  /** The read itself; the checks are those of KafkaIO.Read.expand that apply to it. */
  static class ReadBatches extends PTransform<PBegin, PCollection<byte[]>> {
    private final KafkaIO.Read<byte[], byte[]> spec;
    private final int maxBatchRecords;

    ReadBatches(KafkaIO.Read<byte[], byte[]> spec, int maxBatchRecords) {
      super("KafkaRecordBatchRead");
      this.spec = spec;
      this.maxBatchRecords = maxBatchRecords;
    }

    @Override
    public PCollection<byte[]> expand(PBegin input) {
      checkArgument(
          spec.getConsumerConfig().get(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG) != null,
          "bootstrap.servers is required");
      checkArgument(
          spec.getTopics() != null && !spec.getTopics().isEmpty(), "at least one topic is required");
      // A record count would bound batches, not records: not offered rather than wrong.
      checkArgument(
          spec.getMaxNumRecords() == Long.MAX_VALUE && spec.getMaxReadTime() == null,
          "max_num_records and max_read_time are not supported by the batched read");
      if (spec.isCommitOffsetsInFinalizeEnabled()) {
        checkArgument(
            spec.getConsumerConfig().get(ConsumerConfig.GROUP_ID_CONFIG) != null,
            "commit_offset_in_finalize needs group.id in the consumer config");
      }
      if (!usesUnboundedSources(input.getPipeline().getOptions())) {
        return input
            .apply("ReadFromKafka", spec)
            .apply("RecordAsBatch", ParDo.of(new RecordAsBatchFn()))
            .setCoder(ByteArrayCoder.of());
      }
      return input.apply(
          "ReadRecordBatches",
          org.apache.beam.sdk.io.Read.from(new KafkaRecordBatchSource(spec, maxBatchRecords)));
    }

    private static boolean usesUnboundedSources(PipelineOptions options) {
      return ExperimentalOptions.hasExperiment(options, "use_deprecated_read")
          || ExperimentalOptions.hasExperiment(options, "beam_fn_api_use_deprecated_read");
    }
  }

  /** One record as a batch of one, with no read watermark (the SDF read has none to give). */
  static class RecordAsBatchFn extends DoFn<KafkaRecord<byte[], byte[]>, byte[]> {
    @ProcessElement
    public void processElement(
        @Element KafkaRecord<byte[], byte[]> record, OutputReceiver<byte[]> out) {
      KafkaRecordBatchSource.BatchWriter writer =
          new KafkaRecordBatchSource.BatchWriter(record.getTopic(), record.getPartition());
      writer.add(record);
      out.output(writer.toByteArray(Long.MIN_VALUE));
    }
  }
}
