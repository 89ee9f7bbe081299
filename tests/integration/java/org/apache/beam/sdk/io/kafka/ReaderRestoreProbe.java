package org.apache.beam.sdk.io.kafka;

import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.io.UnboundedSource.UnboundedReader;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.KV;

/**
 * tests/integration/test_kafka_batch_read_restore.py: a batched reader checkpointed while batches
 * of its last read wait, its mark encoded and decoded, and a second reader started from it.
 *
 * <p>Args: bootstrap, topic (one partition), group, records in the topic, shards. Prints one line
 * per emitted batch, "first|second SHARD BASE64", and "waiting N" for the batches the mark held.
 */
public class ReaderRestoreProbe {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    String group = args[2];
    int records = Integer.parseInt(args[3]);
    int shards = Integer.parseInt(args[4]);
    Map<String, Object> consumer = new HashMap<>();
    consumer.put("group.id", group);
    consumer.put("auto.offset.reset", "earliest");
    consumer.put("enable.auto.commit", "false");
    KafkaIO.Read<byte[], byte[]> spec =
        KafkaIO.readBytes()
            .withBootstrapServers(bootstrap)
            .withTopic(topic)
            .withConsumerConfigUpdates(consumer)
            .commitOffsetsInFinalize();
    PipelineOptions options = PipelineOptionsFactory.create();
    KafkaRecordBatchSource source =
        new KafkaRecordBatchSource(spec, 300, new TickShards(shards)).split(1, options).get(0);

    KafkaRecordBatchSource.Reader first =
        (KafkaRecordBatchSource.Reader) source.createReader(options, null);
    int read = 0;
    long deadline = System.currentTimeMillis() + 120_000;
    boolean available = first.start();
    // Stop in the middle of a read, with batches of it still waiting, after a few reads.
    while (read < records / 3 || first.waiting() == 0) {
      if (System.currentTimeMillis() > deadline) {
        throw new IllegalStateException("no read with waiting batches after " + read + " records");
      }
      if (available) {
        read += print("first", first.getCurrent());
      } else {
        Thread.sleep(10);
      }
      available = first.advance();
    }
    if (available) {
      read += print("first", first.getCurrent());
    }
    KafkaRecordBatchSource.Mark mark = first.getCheckpointMark();
    System.out.println("waiting " + mark.pending.size());
    mark.finalizeCheckpoint(); // commits in the reader's poll thread: give it time
    Thread.sleep(3000);
    first.close();

    Coder<KafkaRecordBatchSource.Mark> coder = source.getCheckpointMarkCoder();
    KafkaRecordBatchSource.Mark restored =
        CoderUtils.decodeFromByteArray(coder, CoderUtils.encodeToByteArray(coder, mark));
    UnboundedReader<KV<Long, byte[]>> second = source.createReader(options, restored);
    available = second.start();
    while (read < records) {
      if (System.currentTimeMillis() > deadline) {
        throw new IllegalStateException("only " + read + " of " + records + " records read");
      }
      if (available) {
        read += print("second", second.getCurrent());
      } else {
        Thread.sleep(10);
      }
      available = second.advance();
    }
    Thread.sleep(500);
    // Nothing more: no record twice.
    if (second.advance()) {
      print("second", second.getCurrent());
    }
    second.close();
    System.out.flush();
    System.exit(0);
  }

  private static int print(String reader, KV<Long, byte[]> batch) {
    System.out.println(
        reader + " " + batch.getKey() + " " + Base64.getEncoder().encodeToString(batch.getValue()));
    byte[] bytes = batch.getValue();
    int topicLength = readInt(bytes, 12);
    return readInt(bytes, 16 + topicLength + 4);
  }

  private static int readInt(byte[] bytes, int at) {
    return ((bytes[at] & 0xff) << 24)
        | ((bytes[at + 1] & 0xff) << 16)
        | ((bytes[at + 2] & 0xff) << 8)
        | (bytes[at + 3] & 0xff);
  }
}
