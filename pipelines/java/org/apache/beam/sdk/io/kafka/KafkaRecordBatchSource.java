package org.apache.beam.sdk.io.kafka;

import static org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.base.Preconditions.checkState;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Optional;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.CustomCoder;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.VarIntCoder;
import org.apache.beam.sdk.coders.VarLongCoder;
import org.apache.beam.sdk.io.UnboundedSource;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.values.KV;
import org.apache.kafka.common.TopicPartition;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Instant;

/**
 * {@link KafkaUnboundedSource} with one split per partition, whose reader emits batches.
 *
 * <p>One split per partition whatever the runner asks for: a KafkaUnboundedReader that owns
 * several partitions hands their records over one at a time, round robin, and a Flink subtask
 * round-robins over its readers, so one reader that is waiting for Kafka slows down every record
 * of the others. With one partition per reader, Flink's UnboundedSourceWrapper runs as many
 * readers per subtask as it needs, and each of their advance() calls returns a whole batch.
 *
 * <p>The records of one partition that were immediately available, at most {@code
 * maxBatchRecords} of them or about {@link #MAX_BATCH_BYTES} of keys and values, are read
 * together and split by state shard ({@link TickShards}): each element is {@code KV(shard,
 * batch)}, the batch being that shard's records of the read, in offset order, as one byte[]
 * (big-endian, {@link DataOutputStream}):
 *
 * <pre>
 *   int32 version = 1
 *   int64 read_watermark_ms   (Long.MIN_VALUE: none yet)
 *   int32 topic length, topic UTF-8 bytes
 *   int32 partition
 *   int32 count
 *   count times: int64 offset, int64 timestamp ms (CreateTime),
 *                int32 key length (-1: null) + key, int32 value length (-1: null) + value
 * </pre>
 *
 * <p>read_watermark_ms is the highest watermark the reader had reported (to Flink, which emits
 * it ahead of the batch) before the batch was read: no step downstream sees a later watermark
 * before the batch arrives, and every step sees this one before it, so a record whose window
 * expired by it is provably late (transforms.RecordBatch). The watermark of the records just read
 * is reported only after them: judged against it, a backlog drained in batches that each span
 * more than the allowed lateness would look late. The batch's timestamp is its earliest record's,
 * but never behind a watermark already reported, so no batch is late as a whole.
 *
 * <p>The batches of one read go out one per advance(). Until the last has, the reader's watermark
 * stays at or before their earliest record, and its checkpoint mark ({@link Mark}) holds
 * the ones not yet emitted: the Kafka offsets it restores from are past them, and a restore emits
 * them first. The offsets it commits to the consumer group are those of the first record not yet
 * emitted, so a start from the group's offsets skips nothing either.
 */
class KafkaRecordBatchSource extends UnboundedSource<KV<Long, byte[]>, KafkaRecordBatchSource.Mark> {
  static final int FORMAT_VERSION = 1;
  static final long MAX_BATCH_BYTES = 1 << 20;
  static final long NO_WATERMARK = Long.MIN_VALUE;

  private final KafkaUnboundedSource<byte[], byte[]> kafka;
  private final int maxBatchRecords;
  private final TickShards shards;

  KafkaRecordBatchSource(KafkaIO.Read<byte[], byte[]> spec, int maxBatchRecords, TickShards shards) {
    this(new KafkaUnboundedSource<>(spec, -1), maxBatchRecords, shards);
  }

  private KafkaRecordBatchSource(
      KafkaUnboundedSource<byte[], byte[]> kafka, int maxBatchRecords, TickShards shards) {
    this.kafka = kafka;
    this.maxBatchRecords = maxBatchRecords;
    this.shards = shards;
  }

  @Override
  public List<KafkaRecordBatchSource> split(int desiredNumSplits, PipelineOptions options)
      throws Exception {
    // KafkaUnboundedSource makes min(desired, partitions) splits: asking for more than there can
    // be partitions gives one per partition, in <topic, partition> order (stable across restarts,
    // which restoring a checkpoint relies on).
    List<KafkaRecordBatchSource> splits = new ArrayList<>();
    for (KafkaUnboundedSource<byte[], byte[]> split : kafka.split(Integer.MAX_VALUE, options)) {
      splits.add(new KafkaRecordBatchSource(split, maxBatchRecords, shards));
    }
    return splits;
  }

  @Override
  public UnboundedReader<KV<Long, byte[]>> createReader(
      PipelineOptions options, @Nullable Mark checkpointMark) throws IOException {
    KafkaRecordBatchSource single = this;
    if (partitions().size() != 1) {
      List<KafkaRecordBatchSource> splits;
      try {
        splits = split(1, options);
      } catch (Exception e) {
        throw new IOException("could not list the partitions of " + kafka.getSpec().getTopics(), e);
      }
      // A batch holds one partition and the checkpoint mark covers every record the Kafka reader
      // consumed: a reader of several partitions could not end a batch without losing a record.
      checkState(
          splits.size() == 1, "a reader reads one partition: split() the source first, not %s",
          splits);
      single = splits.get(0);
    }
    return new Reader(
        single,
        single.kafka.createReader(options, checkpointMark == null ? null : checkpointMark.kafka),
        checkpointMark == null ? Collections.emptyList() : checkpointMark.pending);
  }

  private List<TopicPartition> partitions() {
    List<TopicPartition> partitions = kafka.getSpec().getTopicPartitions();
    return partitions == null ? new ArrayList<>() : partitions;
  }

  @Override
  public Coder<Mark> getCheckpointMarkCoder() {
    return new MarkCoder(kafka.getCheckpointMarkCoder());
  }

  @Override
  public boolean requiresDeduping() {
    return kafka.requiresDeduping();
  }

  @Override
  public Coder<KV<Long, byte[]>> getOutputCoder() {
    return outputCoder();
  }

  static Coder<KV<Long, byte[]>> outputCoder() {
    return KvCoder.of(VarLongCoder.of(), ByteArrayCoder.of());
  }

  @Override
  public String toString() {
    return "KafkaRecordBatchSource" + partitions();
  }

  /** A shard's batch of a read, not emitted yet. */
  static final class Pending {
    final long shard;
    final byte[] batch;
    final long minTimestampMs;
    final long firstOffset;

    Pending(long shard, byte[] batch, long minTimestampMs, long firstOffset) {
      this.shard = shard;
      this.batch = batch;
      this.minTimestampMs = minTimestampMs;
      this.firstOffset = firstOffset;
    }
  }

  /**
   * Delegates to the Kafka reader; each read drains what is available, and its batches, one per
   * shard, go out one per advance().
   */
  static class Reader extends UnboundedReader<KV<Long, byte[]>> {
    private final KafkaRecordBatchSource source;
    private final KafkaUnboundedReader<byte[], byte[]> kafka;
    private final TopicPartition partition;
    private final ArrayDeque<Pending> pending;
    private @Nullable KV<Long, byte[]> current = null;
    private @Nullable Instant currentTimestamp = null;
    // The highest watermark getWatermark() returned: Flink emits each value it gets from there.
    private Instant reported = BoundedWindow.TIMESTAMP_MIN_VALUE;

    Reader(
        KafkaRecordBatchSource source,
        KafkaUnboundedReader<byte[], byte[]> kafka,
        List<Pending> restored) {
      this.source = source;
      this.kafka = kafka;
      this.partition = source.partitions().get(0);
      this.pending = new ArrayDeque<>(restored);
    }

    @Override
    public boolean start() throws IOException {
      // The Kafka reader starts (and may hold a record) even when a restore left batches to emit.
      boolean available = kafka.start();
      if (available) {
        readBatches();
      }
      return emitNext();
    }

    @Override
    public boolean advance() throws IOException {
      if (pending.isEmpty() && kafka.advance()) {
        readBatches();
      }
      return emitNext();
    }

    /** Batches of the last read not emitted yet. */
    int waiting() {
      return pending.size();
    }

    private boolean emitNext() {
      Pending next = pending.poll();
      if (next == null) {
        current = null;
        currentTimestamp = null;
        return false;
      }
      current = KV.of(next.shard, next.batch);
      currentTimestamp = atLeast(new Instant(next.minTimestampMs), reported);
      return true;
    }

    /** Drain what the Kafka reader has now, starting with its current record, into batches by shard. */
    private void readBatches() throws IOException {
      TickShards shards = source.shards;
      BatchWriter[] writers = new BatchWriter[shards.count()];
      int count = 0;
      long bytes = 0;
      // advance() == false means the Kafka reader's hand-off queue was empty for a moment: what
      // has been read so far goes now rather than waiting for a full batch.
      do {
        KafkaRecord<byte[], byte[]> record = kafka.getCurrent();
        checkState(
            record.getPartition() == partition.partition()
                && record.getTopic().equals(partition.topic()),
            "record of %s-%s in the reader of %s",
            record.getTopic(), record.getPartition(), partition);
        int shard = shards.shardOf(record.getKV().getValue(), record.getOffset());
        BatchWriter writer = writers[shard];
        if (writer == null) {
          writer = writers[shard] = new BatchWriter(partition.topic(), partition.partition());
        }
        bytes += writer.add(record);
        count++;
      } while (count < source.maxBatchRecords && bytes < MAX_BATCH_BYTES && kafka.advance());
      long readWatermark =
          reported.isAfter(BoundedWindow.TIMESTAMP_MIN_VALUE) ? reported.getMillis() : NO_WATERMARK;
      for (int shard = 0; shard < writers.length; shard++) {
        BatchWriter writer = writers[shard];
        if (writer != null) {
          pending.add(
              new Pending(
                  shard,
                  writer.toByteArray(readWatermark),
                  writer.minTimestamp(),
                  writer.firstOffset()));
        }
      }
    }

    private static Instant atLeast(Instant value, Instant floor) {
      return value.isBefore(floor) ? floor : value;
    }

    @Override
    public Instant getWatermark() {
      // Monotone (the Kafka reader's is not: a caught-up partition follows the clock, then a
      // record older than the clock arrives), and what the next read's batches carry. While
      // batches of a read wait, not past their earliest record: no window of theirs may get its
      // ON_TIME pane before they arrive (their read watermark, written before, is then lower than
      // what the steps downstream have seen, but still before every record of theirs).
      Instant watermark = kafka.getWatermark();
      for (Pending batch : pending) {
        if (batch.minTimestampMs < watermark.getMillis()) {
          watermark = new Instant(batch.minTimestampMs);
        }
      }
      reported = atLeast(watermark, reported);
      return reported;
    }

    @Override
    public KV<Long, byte[]> getCurrent() throws NoSuchElementException {
      if (current == null) {
        throw new NoSuchElementException();
      }
      return current;
    }

    @Override
    public Instant getCurrentTimestamp() throws NoSuchElementException {
      if (currentTimestamp == null) {
        throw new NoSuchElementException();
      }
      return currentTimestamp;
    }

    @Override
    public Mark getCheckpointMark() {
      KafkaCheckpointMark consumed = (KafkaCheckpointMark) kafka.getCheckpointMark();
      if (pending.isEmpty()) {
        return new Mark(consumed, consumed, Collections.emptyList());
      }
      long firstWaiting = Long.MAX_VALUE;
      for (Pending batch : pending) {
        firstWaiting = Math.min(firstWaiting, batch.firstOffset);
      }
      List<KafkaCheckpointMark.PartitionMark> commit = new ArrayList<>();
      for (KafkaCheckpointMark.PartitionMark mark : consumed.getPartitions()) {
        commit.add(
            new KafkaCheckpointMark.PartitionMark(
                mark.getTopic(),
                mark.getPartition(),
                Math.min(mark.getNextOffset(), firstWaiting),
                mark.getWatermarkMillis()));
      }
      Optional<KafkaUnboundedReader<?, ?>> committer =
          source.kafka.getSpec().isCommitOffsetsInFinalizeEnabled()
              ? Optional.of(kafka)
              : Optional.empty();
      return new Mark(
          consumed, new KafkaCheckpointMark(commit, committer), new ArrayList<>(pending));
    }

    @Override
    public long getSplitBacklogBytes() {
      return kafka.getSplitBacklogBytes();
    }

    @Override
    public long getTotalBacklogBytes() {
      return kafka.getTotalBacklogBytes();
    }

    @Override
    public UnboundedSource<KV<Long, byte[]>, ?> getCurrentSource() {
      return source;
    }

    @Override
    public void close() throws IOException {
      kafka.close();
    }
  }

  /**
   * The Kafka reader's mark (every record consumed) and the batches of those records not emitted
   * yet. Finalizing commits the offset of the first record not emitted.
   */
  static final class Mark implements UnboundedSource.CheckpointMark {
    final KafkaCheckpointMark kafka;
    private final @Nullable KafkaCheckpointMark commit; // null once decoded: its reader is gone
    final List<Pending> pending;

    Mark(KafkaCheckpointMark kafka, @Nullable KafkaCheckpointMark commit, List<Pending> pending) {
      this.kafka = kafka;
      this.commit = commit;
      this.pending = pending;
    }

    @Override
    public void finalizeCheckpoint() throws IOException {
      if (commit != null) {
        commit.finalizeCheckpoint();
      }
    }

    @Override
    public String toString() {
      return "Mark{" + kafka + ", " + pending.size() + " batches waiting}";
    }
  }

  /** The Kafka mark in Kafka's own coder, then the waiting batches. */
  static final class MarkCoder extends CustomCoder<Mark> {
    private final Coder<KafkaCheckpointMark> kafkaCoder;

    MarkCoder(Coder<KafkaCheckpointMark> kafkaCoder) {
      this.kafkaCoder = kafkaCoder;
    }

    @Override
    public void encode(Mark mark, OutputStream out) throws IOException {
      kafkaCoder.encode(mark.kafka, out);
      VarIntCoder.of().encode(mark.pending.size(), out);
      for (Pending batch : mark.pending) {
        VarLongCoder.of().encode(batch.shard, out);
        VarLongCoder.of().encode(batch.minTimestampMs, out);
        VarLongCoder.of().encode(batch.firstOffset, out);
        ByteArrayCoder.of().encode(batch.batch, out);
      }
    }

    @Override
    public Mark decode(InputStream in) throws IOException {
      KafkaCheckpointMark kafka = kafkaCoder.decode(in);
      int count = VarIntCoder.of().decode(in);
      List<Pending> pending = new ArrayList<>(count);
      for (int i = 0; i < count; i++) {
        long shard = VarLongCoder.of().decode(in);
        long minTimestampMs = VarLongCoder.of().decode(in);
        long firstOffset = VarLongCoder.of().decode(in);
        pending.add(new Pending(shard, ByteArrayCoder.of().decode(in), minTimestampMs, firstOffset));
      }
      // A restored mark commits nothing: the reader that read it is gone (as KafkaCheckpointMark).
      return new Mark(kafka, null, pending);
    }

    @Override
    public void verifyDeterministic() {}
  }

  /** Writes one batch in the format above; header fields known only at the end are patched. */
  static final class BatchWriter {
    private final PatchableBuffer buffer = new PatchableBuffer(16 * 1024);
    private final DataOutputStream out = new DataOutputStream(buffer);
    private final int watermarkAt;
    private final int countAt;
    private int count = 0;
    private long bytes = 0;
    private long minTimestamp = Long.MAX_VALUE;
    private long firstOffset = -1;

    BatchWriter(String topic, int partition) {
      byte[] topicBytes = topic.getBytes(StandardCharsets.UTF_8);
      try {
        out.writeInt(FORMAT_VERSION);
        watermarkAt = buffer.size();
        out.writeLong(NO_WATERMARK);
        out.writeInt(topicBytes.length);
        out.write(topicBytes);
        out.writeInt(partition);
        countAt = buffer.size();
        out.writeInt(0);
      } catch (IOException e) {
        throw new UncheckedIOException(e); // a byte array stream does not throw
      }
    }

    /** Append a record; return the bytes of its key and value. */
    long add(KafkaRecord<byte[], byte[]> record) {
      byte[] key = record.getKV().getKey();
      byte[] value = record.getKV().getValue();
      try {
        out.writeLong(record.getOffset());
        out.writeLong(record.getTimestamp());
        writeBytes(key);
        writeBytes(value);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      if (count == 0) {
        firstOffset = record.getOffset();
      }
      count++;
      long size = (key == null ? 0 : key.length) + (value == null ? 0 : value.length);
      bytes += size;
      minTimestamp = Math.min(minTimestamp, record.getTimestamp());
      return size;
    }

    private void writeBytes(byte @Nullable [] data) throws IOException {
      if (data == null) {
        out.writeInt(-1);
      } else {
        out.writeInt(data.length);
        out.write(data);
      }
    }

    int count() {
      return count;
    }

    long bytes() {
      return bytes;
    }

    long minTimestamp() {
      return minTimestamp;
    }

    long firstOffset() {
      return firstOffset;
    }

    byte[] toByteArray(long readWatermarkMs) {
      buffer.putLong(watermarkAt, readWatermarkMs);
      buffer.putInt(countAt, count);
      return buffer.toByteArray();
    }
  }

  /** A ByteArrayOutputStream whose already written bytes can be overwritten, big-endian. */
  private static final class PatchableBuffer extends ByteArrayOutputStream {
    PatchableBuffer(int size) {
      super(size);
    }

    void putInt(int at, int value) {
      for (int i = 0; i < 4; i++) {
        buf[at + i] = (byte) (value >>> (24 - 8 * i));
      }
    }

    void putLong(int at, long value) {
      for (int i = 0; i < 8; i++) {
        buf[at + i] = (byte) (value >>> (56 - 8 * i));
      }
    }
  }
}
