package org.apache.beam.sdk.io.kafka;

import static org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.base.Preconditions.checkArgument;

import java.nio.ByteBuffer;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PDone;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * KafkaIO's write fed with batches of records, one byte[] each.
 *
 * <p>Every element that crosses from the Python SDK to a Java transform costs an encode, a hand-off
 * through the runner and a decode on each side. The market pipeline emits on the order of 10,000
 * bar versions a second at market scale; batched, they cross as a few elements per bundle and are
 * unpacked here, in the same Java stage as KafkaIO's writer.
 *
 * <p>Batch format (big-endian), written by pipelines/kafka_io.py {@code pack_records}: int32
 * version (1), int32 record count, then per record int32 key length (-1: null key), key bytes,
 * int32 value length, value bytes.
 */
public class KafkaRecordBatchWrite implements ExternalTransformRegistrar {
  public static final String URN = "beam:transform:market-data:kafka_write_batches:v1";
  static final int FORMAT_VERSION = 1;

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** The producer's configuration and the topic. */
  public static class Configuration {
    private Map<String, String> producerConfig = new HashMap<>();
    private String topic;

    public void setProducerConfig(Map<String, String> producerConfig) {
      this.producerConfig = producerConfig;
    }

    public void setTopic(String topic) {
      this.topic = topic;
    }
  }

  static class Builder
      implements ExternalTransformBuilder<Configuration, PCollection<byte[]>, PDone> {
    @Override
    public PTransform<PCollection<byte[]>, PDone> buildExternal(Configuration config) {
      checkArgument(config.topic != null && !config.topic.isEmpty(), "topic is required");
      checkArgument(
          config.producerConfig != null && config.producerConfig.get("bootstrap.servers") != null,
          "bootstrap.servers is required in producer_config");
      return new WriteBatches(config.topic, new HashMap<>(config.producerConfig));
    }
  }

  static class WriteBatches extends PTransform<PCollection<byte[]>, PDone> {
    private final String topic;
    private final Map<String, Object> producerConfig;

    WriteBatches(String topic, Map<String, String> producerConfig) {
      super("KafkaRecordBatchWrite");
      this.topic = topic;
      this.producerConfig = new HashMap<>(producerConfig);
    }

    @Override
    public PDone expand(PCollection<byte[]> batches) {
      return batches
          .apply("UnpackRecords", ParDo.of(new UnpackFn()))
          .setCoder(KvCoder.of(ByteArrayCoder.of(), ByteArrayCoder.of()))
          .apply(
              "WriteToKafka",
              KafkaIO.<byte[], byte[]>write()
                  .withTopic(topic)
                  .withProducerConfigUpdates(producerConfig)
                  .withKeySerializer(ByteArraySerializer.class)
                  .withValueSerializer(ByteArraySerializer.class));
    }
  }

  /** The records of one batch, in order. */
  static class UnpackFn extends DoFn<byte[], KV<byte[], byte[]>> {
    @ProcessElement
    public void processElement(@Element byte[] batch, OutputReceiver<KV<byte[], byte[]>> out) {
      ByteBuffer buffer = ByteBuffer.wrap(batch);
      int version = buffer.getInt();
      checkArgument(version == FORMAT_VERSION, "record batch format %s, expected %s", version,
          FORMAT_VERSION);
      int count = buffer.getInt();
      for (int i = 0; i < count; i++) {
        byte[] key = read(buffer);
        byte[] value = read(buffer);
        out.output(KV.of(key, value));
      }
      checkArgument(!buffer.hasRemaining(), "%s bytes after %s records", buffer.remaining(), count);
    }

    private static byte[] read(ByteBuffer buffer) {
      int length = buffer.getInt();
      if (length < 0) {
        return null;
      }
      byte[] bytes = new byte[length];
      buffer.get(bytes);
      return bytes;
    }
  }
}
