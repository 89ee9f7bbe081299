package org.apache.beam.sdk.io.kafka;

import static org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.base.Preconditions.checkState;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.io.UnboundedSource;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
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
 * <p>Each element is the records of one partition that were immediately available, at most
 * {@code maxBatchRecords} of them or about {@link #MAX_BATCH_BYTES} of keys and values, as one
 * byte[] (big-endian, {@link DataOutputStream}):
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
 */
class KafkaRecordBatchSource extends UnboundedSource<byte[], KafkaCheckpointMark> {
  static final int FORMAT_VERSION = 1;
  static final long MAX_BATCH_BYTES = 1 << 20;
  static final long NO_WATERMARK = Long.MIN_VALUE;

  private final KafkaUnboundedSource<byte[], byte[]> kafka;
  private final int maxBatchRecords;

  KafkaRecordBatchSource(KafkaIO.Read<byte[], byte[]> spec, int maxBatchRecords) {
    this(new KafkaUnboundedSource<>(spec, -1), maxBatchRecords);
  }

  private KafkaRecordBatchSource(KafkaUnboundedSource<byte[], byte[]> kafka, int maxBatchRecords) {
    this.kafka = kafka;
    this.maxBatchRecords = maxBatchRecords;
  }

  @Override
  public List<KafkaRecordBatchSource> split(int desiredNumSplits, PipelineOptions options)
      throws Exception {
    // KafkaUnboundedSource makes min(desired, partitions) splits: asking for more than there can
    // be partitions gives one per partition, in <topic, partition> order (stable across restarts,
    // which restoring a checkpoint relies on).
    List<KafkaRecordBatchSource> splits = new ArrayList<>();
    for (KafkaUnboundedSource<byte[], byte[]> split : kafka.split(Integer.MAX_VALUE, options)) {
      splits.add(new KafkaRecordBatchSource(split, maxBatchRecords));
    }
    return splits;
  }

  @Override
  public UnboundedReader<byte[]> createReader(
      PipelineOptions options, @Nullable KafkaCheckpointMark checkpointMark) throws IOException {
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
    return new Reader(single, single.kafka.createReader(options, checkpointMark));
  }

  private List<TopicPartition> partitions() {
    List<TopicPartition> partitions = kafka.getSpec().getTopicPartitions();
    return partitions == null ? new ArrayList<>() : partitions;
  }

  @Override
  public Coder<KafkaCheckpointMark> getCheckpointMarkCoder() {
    return kafka.getCheckpointMarkCoder();
  }

  @Override
  public boolean requiresDeduping() {
    return kafka.requiresDeduping();
  }

  @Override
  public Coder<byte[]> getOutputCoder() {
    return ByteArrayCoder.of();
  }

  @Override
  public String toString() {
    return "KafkaRecordBatchSource" + partitions();
  }

  /** Delegates to the Kafka reader; each advance() drains what is available into one batch. */
  static class Reader extends UnboundedReader<byte[]> {
    private final KafkaRecordBatchSource source;
    private final KafkaUnboundedReader<byte[], byte[]> kafka;
    private final TopicPartition partition;
    private byte @Nullable [] current = null;
    private @Nullable Instant currentTimestamp = null;
    // The highest watermark getWatermark() returned: Flink emits each value it gets from there.
    private Instant reported = BoundedWindow.TIMESTAMP_MIN_VALUE;

    Reader(KafkaRecordBatchSource source, KafkaUnboundedReader<byte[], byte[]> kafka) {
      this.source = source;
      this.kafka = kafka;
      this.partition = source.partitions().get(0);
    }

    @Override
    public boolean start() throws IOException {
      return readBatch(kafka.start());
    }

    @Override
    public boolean advance() throws IOException {
      return readBatch(kafka.advance());
    }

    /** Drain what the Kafka reader has now, starting with its current record if `available`. */
    private boolean readBatch(boolean available) throws IOException {
      if (!available) {
        return false;
      }
      BatchWriter batch = new BatchWriter(partition.topic(), partition.partition());
      add(batch, kafka.getCurrent());
      // advance() == false means the Kafka reader's hand-off queue was empty for a moment: what
      // has been read so far goes now rather than waiting for a full batch.
      while (batch.count() < source.maxBatchRecords
          && batch.bytes() < MAX_BATCH_BYTES
          && kafka.advance()) {
        add(batch, kafka.getCurrent());
      }
      current =
          batch.toByteArray(
              reported.isAfter(BoundedWindow.TIMESTAMP_MIN_VALUE)
                  ? reported.getMillis()
                  : NO_WATERMARK);
      currentTimestamp = atLeast(new Instant(batch.minTimestamp()), reported);
      return true;
    }

    private void add(BatchWriter batch, KafkaRecord<byte[], byte[]> record) {
      checkState(
          record.getPartition() == partition.partition()
              && record.getTopic().equals(partition.topic()),
          "record of %s-%s in the reader of %s",
          record.getTopic(), record.getPartition(), partition);
      batch.add(record);
    }

    private static Instant atLeast(Instant value, Instant floor) {
      return value.isBefore(floor) ? floor : value;
    }

    @Override
    public Instant getWatermark() {
      // Monotone (the Kafka reader's is not: a caught-up partition follows the clock, then a
      // record older than the clock arrives), and exactly what the next batch carries.
      reported = atLeast(kafka.getWatermark(), reported);
      return reported;
    }

    @Override
    public byte[] getCurrent() throws NoSuchElementException {
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
    public CheckpointMark getCheckpointMark() {
      return kafka.getCheckpointMark();
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
    public UnboundedSource<byte[], ?> getCurrentSource() {
      return source;
    }

    @Override
    public void close() throws IOException {
      kafka.close();
    }
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

    void add(KafkaRecord<byte[], byte[]> record) {
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
      count++;
      bytes += (key == null ? 0 : key.length) + (value == null ? 0 : value.length);
      minTimestamp = Math.min(minTimestamp, record.getTimestamp());
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
