package org.apache.beam.sdk.io.kafka;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.zip.CRC32;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The state shard of a tick record, as the Python bar step keys it (transforms/ticks.py
 * {@code shard_of}): CRC-32 of the upper-cased symbol's UTF-8 bytes, modulo the shard count.
 *
 * <p>The read routes each record to its shard so that the Python bar step can take the records
 * straight from Kafka, parsing them itself: one Python stage instead of a parse stage, a shuffle
 * and the bar stage. Python validates every record again and checks the shard (a record routed
 * elsewhere is a dead letter, never a second book of its symbol); this side only needs the same
 * answer for every valid tick. A value that is not a JSON object with a string {@code symbol}
 * cannot be a valid tick: it goes to a shard by its offset, so a flood of them is spread out.
 */
final class TickShards implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final JsonFactory JSON = new JsonFactory();
  private static final String SYMBOL = "symbol";

  private final int shards;

  TickShards(int shards) {
    if (shards < 1) {
      throw new IllegalArgumentException("shards must be >= 1, got " + shards);
    }
    this.shards = shards;
  }

  int count() {
    return shards;
  }

  /** The shard of the record at {@code offset} whose value is {@code value}. */
  int shardOf(byte @Nullable [] value, long offset) {
    if (shards == 1) {
      return 0;
    }
    String symbol = symbolOf(value);
    if (symbol == null) {
      return (int) Math.floorMod(offset, (long) shards);
    }
    CRC32 crc = new CRC32();
    // Python upper-cases a valid symbol (ASCII only, market/schema.py): the same here.
    crc.update(symbol.toUpperCase(Locale.ROOT).getBytes(StandardCharsets.UTF_8));
    return (int) (crc.getValue() % shards);
  }

  /**
   * The top-level {@code symbol} string of a JSON object, the last one if it repeats (as Python's
   * JSON reader takes it); null for anything else.
   */
  static @Nullable String symbolOf(byte @Nullable [] value) {
    if (value == null) {
      return null;
    }
    String leading = leadingSymbol(value);
    return leading != null ? leading : parsedSymbol(value);
  }

  private static final byte[] LEADING = "{\"symbol\":\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] KEY = "\"symbol\"".getBytes(StandardCharsets.US_ASCII);
  private static final int MAX_SYMBOL = 16;

  /**
   * The symbol of a value as the producer writes it, {@code {"symbol":"AAPL",...}}, without a JSON
   * parser (a third of this read's CPU went to Jackson): the symbol's characters are those a valid
   * symbol may have, and no backslash or second {@code "symbol"} key follows, so no later field can
   * be another symbol. Null when that is not so: then the parser decides.
   */
  private static @Nullable String leadingSymbol(byte[] value) {
    if (value.length < LEADING.length + 2) {
      return null;
    }
    for (int i = 0; i < LEADING.length; i++) {
      if (value[i] != LEADING[i]) {
        return null;
      }
    }
    int end = LEADING.length;
    while (end < value.length && end - LEADING.length <= MAX_SYMBOL && isSymbolByte(value[end])) {
      end++;
    }
    int length = end - LEADING.length;
    if (length < 1 || length > MAX_SYMBOL || end >= value.length || value[end] != '"') {
      return null;
    }
    for (int i = end + 1; i < value.length; i++) {
      byte b = value[i];
      if (b == '\\' || (b == '"' && startsWith(value, i, KEY))) {
        return null;
      }
    }
    return new String(value, LEADING.length, length, StandardCharsets.US_ASCII);
  }

  /** market/schema.py SYMBOL_PATTERN's characters: A-Z a-z 0-9 . - _ / : = ^ */
  private static boolean isSymbolByte(byte b) {
    return (b >= 'A' && b <= 'Z')
        || (b >= 'a' && b <= 'z')
        || (b >= '0' && b <= '9')
        || b == '.'
        || b == '-'
        || b == '_'
        || b == '/'
        || b == ':'
        || b == '='
        || b == '^';
  }

  private static boolean startsWith(byte[] value, int at, byte[] prefix) {
    if (at + prefix.length > value.length) {
      return false;
    }
    for (int i = 0; i < prefix.length; i++) {
      if (value[at + i] != prefix[i]) {
        return false;
      }
    }
    return true;
  }

  private static @Nullable String parsedSymbol(byte[] value) {
    try (JsonParser parser = JSON.createParser(value)) {
      if (parser.nextToken() != JsonToken.START_OBJECT) {
        return null;
      }
      String symbol = null;
      while (parser.nextToken() == JsonToken.FIELD_NAME) {
        boolean isSymbol = SYMBOL.equals(parser.getCurrentName());
        JsonToken token = parser.nextToken();
        if (isSymbol) {
          symbol = token == JsonToken.VALUE_STRING ? parser.getText() : null;
        }
        parser.skipChildren(); // a nested value, whatever its field: only top-level fields count
      }
      return symbol;
    } catch (IOException | RuntimeException e) {
      return null; // not JSON: a dead letter whichever shard it goes to
    }
  }

  /**
   * {@code java -cp <jars> org.apache.beam.sdk.io.kafka.TickShards SHARDS}: for each line of
   * standard input (a record value, UTF-8, with its offset as the line number from 0), the shard
   * this read gives it. Which shard holds a symbol, and the check that Python agrees (tests).
   */
  public static void main(String[] args) throws IOException {
    TickShards shards = new TickShards(Integer.parseInt(args[0]));
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, false, "UTF-8");
    long offset = 0;
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      out.println(shards.shardOf(line.getBytes(StandardCharsets.UTF_8), offset++));
    }
    out.flush();
  }
}
