using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace Nabla.Training;

/// <summary>Receives metrics from the Trainer.</summary>
public interface ITrainingLogger
{
    void LogMetrics(IReadOnlyDictionary<string, double> metrics, long step);
    void LogHyperparams(IReadOnlyDictionary<string, string> hparams) { }
    void Finish() { }
}

/// <summary>
/// Writes metrics.csv: one row per logging call, with a column per metric name seen so far (the file is
/// rewritten when a new name appears, as Lightning's CSVLogger does). Empty cells where a metric was not logged.
/// </summary>
public sealed class CsvLogger : ITrainingLogger
{
    readonly List<Dictionary<string, double>> rows = new();
    readonly List<string> columns = new() { "step" };
    public string Path { get; }

    public CsvLogger(string directory)
    {
        Directory.CreateDirectory(directory);
        Path = System.IO.Path.Combine(directory, "metrics.csv");
    }

    public void LogMetrics(IReadOnlyDictionary<string, double> metrics, long step)
    {
        var row = new Dictionary<string, double>(metrics) { ["step"] = step };
        rows.Add(row);
        bool newColumn = false;
        foreach (var k in metrics.Keys) if (!columns.Contains(k)) { columns.Add(k); newColumn = true; }
        if (newColumn || rows.Count == 1) Rewrite();
        else File.AppendAllText(Path, Line(row));
    }

    string Line(Dictionary<string, double> row) =>
        string.Join(",", columns.Select(c => row.TryGetValue(c, out var v) ? v.ToString("R", CultureInfo.InvariantCulture) : "")) + "\n";

    void Rewrite()
    {
        var sb = new StringBuilder(string.Join(",", columns) + "\n");
        foreach (var r in rows) sb.Append(Line(r));
        var tmp = Path + ".tmp";
        File.WriteAllText(tmp, sb.ToString());
        File.Move(tmp, Path, overwrite: true);
    }
}

/// <summary>
/// Writes TensorBoard event files (events.out.tfevents.*): TFRecord framing (length, masked CRC32C of the length,
/// payload, masked CRC32C of the payload) around Event protos with scalar summaries, encoded by hand.
/// </summary>
public sealed class TensorBoardLogger : ITrainingLogger, IDisposable
{
    readonly FileStream stream;
    public string Path { get; }

    public TensorBoardLogger(string directory)
    {
        Directory.CreateDirectory(directory);
        long secs = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Path = System.IO.Path.Combine(directory, $"events.out.tfevents.{secs}.{Environment.MachineName}.{Environment.ProcessId}.0");
        stream = new FileStream(Path, FileMode.Create, FileAccess.Write, FileShare.Read);
        // The first event names the file version.
        var ev = new ProtoWriter();
        ev.Double(1, WallTime());
        ev.Int64(2, 0);
        ev.String(3, "brain.Event:2");
        WriteRecord(ev.ToArray());
    }

    static double WallTime() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    public void LogMetrics(IReadOnlyDictionary<string, double> metrics, long step)
    {
        var summary = new ProtoWriter();
        foreach (var (tag, value) in metrics)
        {
            var v = new ProtoWriter();
            v.String(1, tag);
            v.Float(2, (float)value);
            summary.Bytes(1, v.ToArray());
        }
        var ev = new ProtoWriter();
        ev.Double(1, WallTime());
        ev.Int64(2, step);
        ev.Bytes(5, summary.ToArray());
        WriteRecord(ev.ToArray());
    }

    void WriteRecord(byte[] data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], Crc32C.Masked(header[..8]));
        stream.Write(header);
        stream.Write(data);
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, Crc32C.Masked(data));
        stream.Write(footer);
        stream.Flush();
    }

    public void Finish() => stream.Flush();

    public void Dispose() => stream.Dispose();
}

/// <summary>CRC-32C (Castagnoli), and TFRecord's masked form.</summary>
public static class Crc32C
{
    static readonly uint[] Table = Build();

    static uint[] Build()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (var b in data) c = Table[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    public static uint Masked(ReadOnlySpan<byte> data)
    {
        uint c = Compute(data);
        return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
    }
}

/// <summary>A minimal protobuf encoder for the few field kinds the event files need.</summary>
internal sealed class ProtoWriter
{
    readonly MemoryStream ms = new();

    void Varint(ulong v)
    {
        while (v >= 0x80) { ms.WriteByte((byte)(v | 0x80)); v >>= 7; }
        ms.WriteByte((byte)v);
    }

    void Tag(int field, int wire) => Varint((ulong)(field << 3 | wire));

    public void Int64(int field, long v) { Tag(field, 0); Varint((ulong)v); }

    public void Double(int field, double v)
    {
        Tag(field, 1);
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteDoubleLittleEndian(b, v);
        ms.Write(b);
    }

    public void Float(int field, float v)
    {
        Tag(field, 5);
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(b, v);
        ms.Write(b);
    }

    public void Bytes(int field, byte[] data) { Tag(field, 2); Varint((ulong)data.Length); ms.Write(data); }

    public void String(int field, string s) => Bytes(field, Encoding.UTF8.GetBytes(s));

    public byte[] ToArray() => ms.ToArray();
}
