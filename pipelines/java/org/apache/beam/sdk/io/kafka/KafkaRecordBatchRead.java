package org.apache.beam.sdk.io.kafka;

import static org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.base.Preconditions.checkArgument;

import java.util.Collections;
import java.util.Map;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.options.ExperimentalOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.clients.consumer.ConsumerConfig;

/**
 * KafkaIO's read handed to the SDK as batches of records in one byte[] each, keyed by state shard.
 *
 * <p>A cross-language read that yields one schema Row per record costs the Python side a Row
 * decode per tick; this one yields one element per shard and batch of up to {@code
 * max_batch_records} records of one partition (format in {@link KafkaRecordBatchSource}), as
 * {@code KV(shard, batch)}, each record in the shard of its tick's symbol ({@link TickShards},
 * {@code shards} of them): the keyed Python bar step takes them as they come and parses them in
 * one call. The source is {@link KafkaUnboundedSource} built from the same spec as {@link
 * EventTimeKafkaRead} (consumer config, idle-aware CreateTime watermark, offsets committed when a
 * checkpoint is finalized), split into one reader per partition.
 *
 * <p>Runners that do not run UnboundedSources natively (no {@code use_deprecated_read}, e.g.
 * Dataflow) get KafkaIO's own splittable-DoFn read with each record as a batch of one, without a
 * read watermark: the same element type, only without the batching.
 */
public class KafkaRecordBatchRead implements ExternalTransformRegistrar {
  public static final String URN = "beam:transform:market-data:kafka_read_batches:v1";
  static final int DEFAULT_MAX_BATCH_RECORDS = 8000;

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** {@link EventTimeKafkaRead}'s configuration plus the largest batch and the shard count. */
  public static class Configuration extends EventTimeKafkaRead.Configuration {
    private Long maxBatchRecords = (long) DEFAULT_MAX_BATCH_RECORDS;
    private Long shards = 1L;

    public void setMaxBatchRecords(Long maxBatchRecords) {
      this.maxBatchRecords = maxBatchRecords;
    }

    public void setShards(Long shards) {
      this.shards = shards;
    }
  }

  static class Builder
      implements ExternalTransformBuilder<Configuration, PBegin, PCollection<KV<Long, byte[]>>> {
    @Override
    public PTransform<PBegin, PCollection<KV<Long, byte[]>>> buildExternal(Configuration config) {
      long maxBatch =
          config.maxBatchRecords == null ? DEFAULT_MAX_BATCH_RECORDS : config.maxBatchRecords;
      checkArgument(
          maxBatch > 0 && maxBatch <= Integer.MAX_VALUE, "max_batch_records must be positive");
      long shards = config.shards == null ? 1L : config.shards;
      checkArgument(shards > 0 && shards <= 1 << 16, "shards must be in 1..65536");
      return new ReadBatches(
          EventTimeKafkaRead.readSpec(config), (int) maxBatch, new TickShards((int) shards));
    }
  }

  /** The read itself; the checks are those of KafkaIO.Read.expand that apply to it. */
  static class ReadBatches extends PTransform<PBegin, PCollection<KV<Long, byte[]>>> {
    private final KafkaIO.Read<byte[], byte[]> spec;
    private final int maxBatchRecords;
    private final TickShards shards;

    ReadBatches(KafkaIO.Read<byte[], byte[]> spec, int maxBatchRecords, TickShards shards) {
      super("KafkaRecordBatchRead");
      this.spec = spec;
      this.maxBatchRecords = maxBatchRecords;
      this.shards = shards;
    }

    @Override
    public PCollection<KV<Long, byte[]>> expand(PBegin input) {
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
            .apply("RecordAsBatch", ParDo.of(new RecordAsBatchFn(shards)))
            .setCoder(KafkaRecordBatchSource.outputCoder());
      }
      return input.apply(
          "ReadRecordBatches",
          org.apache.beam.sdk.io.Read.from(
              new KafkaRecordBatchSource(spec, maxBatchRecords, shards)));
    }

    private static boolean usesUnboundedSources(PipelineOptions options) {
      return ExperimentalOptions.hasExperiment(options, "use_deprecated_read")
          || ExperimentalOptions.hasExperiment(options, "beam_fn_api_use_deprecated_read");
    }
  }

  /** One record as a batch of one, with no read watermark (the SDF read has none to give). */
  static class RecordAsBatchFn extends DoFn<KafkaRecord<byte[], byte[]>, KV<Long, byte[]>> {
    private final TickShards shards;

    RecordAsBatchFn(TickShards shards) {
      this.shards = shards;
    }

    @ProcessElement
    public void processElement(
        @Element KafkaRecord<byte[], byte[]> record, OutputReceiver<KV<Long, byte[]>> out) {
      KafkaRecordBatchSource.BatchWriter writer =
          new KafkaRecordBatchSource.BatchWriter(record.getTopic(), record.getPartition());
      writer.add(record);
      long shard = shards.shardOf(record.getKV().getValue(), record.getOffset());
      out.output(KV.of(shard, writer.toByteArray(Long.MIN_VALUE)));
    }
  }
}
