using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using Xunit;

namespace Nabla.Training.Tests;

public class LoggerAndPlotTests
{
    static (Trainer trainer, string dir) TrainWithLoggers(TempDir tmp, int epochs = 3)
    {
        var csv = new CsvLogger(tmp["logs"]);
        using var tb = new TensorBoardLogger(tmp["tb"]);
        var trainer = new Trainer(Tiny.Options(epochs) with { Loggers = [csv, tb], Callbacks = [new LearningRateMonitor()] });
        trainer.Fit(Tiny.Mlp(1, Tiny.AdamWithStepLR(0.01)), Tiny.TrainLoader(), Tiny.ValLoader());
        return (trainer, tmp.Path);
    }

    [Fact]
    public void CsvLoggerColumnsAndRows()
    {
        using var tmp = new TempDir();
        var (trainer, _) = TrainWithLoggers(tmp);
        var lines = File.ReadAllLines(tmp["logs/metrics.csv"]);
        var header = lines[0].Split(',');
        Assert.Equal("step", header[0]);
        foreach (var c in new[] { "lr-group0", "train_loss", "train_acc", "val_loss", "val_acc", "epoch" }) Assert.Contains(c, header);
        Assert.Equal(header.Length, header.Distinct().Count());
        Assert.All(lines.Skip(1), l => Assert.Equal(header.Length, l.Split(',').Length));
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        string Cell(string[] row, string col) => row[Array.IndexOf(header, col)];
        // One learning-rate row per epoch start and one summary row per epoch end.
        var lrRows = rows.Where(r => Cell(r, "lr-group0") != "").ToList();
        var epochRows = rows.Where(r => Cell(r, "epoch") != "").ToList();
        Assert.Equal(3, lrRows.Count);
        Assert.Equal(3, epochRows.Count);
        Assert.Equal([0.01, 0.007, 0.0049], lrRows.Select(r => Math.Round(double.Parse(Cell(r, "lr-group0"), CultureInfo.InvariantCulture), 10)));
        for (int e = 0; e < 3; e++)
        {
            Assert.Equal(e, double.Parse(Cell(epochRows[e], "epoch"), CultureInfo.InvariantCulture));
            Assert.Equal(trainer.History[e]["val_loss"], double.Parse(Cell(epochRows[e], "val_loss"), CultureInfo.InvariantCulture));
            Assert.Equal((e + 1) * 12, long.Parse(Cell(epochRows[e], "step"), CultureInfo.InvariantCulture));
            Assert.Equal("", Cell(epochRows[e], "lr-group0"));
        }
    }

    // ---- an independent reader of TensorBoard event files

    static uint Crc32CReference(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (uint)-(int)(c & 1));
        }
        return ~c;
    }

    static uint MaskedReference(ReadOnlySpan<byte> data)
    {
        uint c = Crc32CReference(data);
        return unchecked(((c >> 15) | (c << 17)) + 0xA282EAD8u);
    }

    sealed record Event(double WallTime, long Step, string? FileVersion, List<(string tag, float value)> Values);

    static ulong Varint(ReadOnlySpan<byte> b, ref int pos)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte x = b[pos++];
            v |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return v;
        }
    }

    /// <summary>Decodes a message into (field, wire type, varint/fixed value, length-delimited bytes).</summary>
    static List<(int field, int wire, ulong num, byte[] bytes)> Fields(byte[] msg)
    {
        var r = new List<(int, int, ulong, byte[])>();
        int pos = 0;
        while (pos < msg.Length)
        {
            ulong key = Varint(msg, ref pos);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: r.Add((field, wire, Varint(msg, ref pos), [])); break;
                case 1: r.Add((field, wire, BinaryPrimitives.ReadUInt64LittleEndian(msg.AsSpan(pos)), [])); pos += 8; break;
                case 5: r.Add((field, wire, BinaryPrimitives.ReadUInt32LittleEndian(msg.AsSpan(pos)), [])); pos += 4; break;
                case 2:
                    int len = (int)Varint(msg, ref pos);
                    r.Add((field, wire, 0, msg[pos..(pos + len)]));
                    pos += len;
                    break;
                default: throw new InvalidDataException($"wire type {wire}");
            }
        }
        return r;
    }

    static List<Event> ReadEvents(string path)
    {
        var data = File.ReadAllBytes(path);
        var events = new List<Event>();
        int pos = 0;
        while (pos < data.Length)
        {
            Assert.True(data.Length - pos >= 16, "truncated record");
            var lenBytes = data.AsSpan(pos, 8);
            ulong len = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            Assert.Equal(MaskedReference(lenBytes), BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(pos + 8)));
            var payload = data[(pos + 12)..(pos + 12 + (int)len)];
            Assert.Equal(MaskedReference(payload), BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(pos + 12 + (int)len)));
            pos += 12 + (int)len + 4;

            double wall = 0;
            long step = 0;
            string? version = null;
            var values = new List<(string, float)>();
            foreach (var (field, wire, num, bytes) in Fields(payload))
            {
                if (field == 1 && wire == 1) wall = BitConverter.UInt64BitsToDouble(num);
                else if (field == 2 && wire == 0) step = (long)num;
                else if (field == 3 && wire == 2) version = Encoding.UTF8.GetString(bytes);
                else if (field == 5 && wire == 2)
                    foreach (var (vf, _, _, vbytes) in Fields(bytes))
                    {
                        if (vf != 1) continue;
                        string tag = "";
                        float value = float.NaN;
                        foreach (var (f, w, n, b) in Fields(vbytes))
                        {
                            if (f == 1 && w == 2) tag = Encoding.UTF8.GetString(b);
                            if (f == 2 && w == 5) value = BitConverter.Int32BitsToSingle((int)(uint)n);
                        }
                        values.Add((tag, value));
                    }
            }
            events.Add(new Event(wall, step, version, values));
        }
        return events;
    }

    [Fact]
    public void Crc32CKnownVector()
    {
        var check = "123456789"u8;
        Assert.Equal(0xE3069283u, Crc32CReference(check));
        Assert.Equal(0xE3069283u, Crc32C.Compute(check));
        Assert.Equal(MaskedReference(check), Crc32C.Masked(check));
    }

    [Fact]
    public void TensorBoardEventFileParsesBack()
    {
        using var tmp = new TempDir();
        var (trainer, _) = TrainWithLoggers(tmp);
        var files = Directory.GetFiles(tmp["tb"]);
        Assert.Single(files);
        Assert.StartsWith("events.out.tfevents.", Path.GetFileName(files[0]));
        var events = ReadEvents(files[0]);
        Assert.Equal("brain.Event:2", events[0].FileVersion);
        Assert.Empty(events[0].Values);
        double now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.All(events, e => Assert.InRange(e.WallTime, now - 600, now + 60));
        var tags = events.SelectMany(e => e.Values.Select(v => v.tag)).ToHashSet();
        foreach (var t in new[] { "train_loss", "train_acc", "val_loss", "val_acc", "epoch", "lr-group0" }) Assert.Contains(t, tags);
        var epochEvents = events.Where(e => e.Values.Any(v => v.tag == "epoch")).ToList();
        Assert.Equal(3, epochEvents.Count);
        for (int i = 0; i < 3; i++)
        {
            var vals = epochEvents[i].Values.ToDictionary(v => v.tag, v => v.value);
            Assert.Equal((i + 1) * 12, epochEvents[i].Step);
            Assert.Equal(i, vals["epoch"]);
            Assert.Equal((float)trainer.History[i]["val_loss"], vals["val_loss"]);
            Assert.Equal((float)trainer.History[i]["train_acc"], vals["train_acc"]);
        }
        var lr = events.Where(e => e.Values.Any(v => v.tag == "lr-group0")).Select(e => e.Values.Single().value).ToList();
        Assert.Equal([0.01f, 0.007f, 0.0049f], lr.Select(v => MathF.Round(v, 6)));
    }

    // ---- PNG

    static uint Crc32Reference(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (uint)-(int)(c & 1));
        }
        return ~c;
    }

    [Fact]
    public void TrainingPlotIsAValidPng()
    {
        using var tmp = new TempDir();
        var (trainer, _) = TrainWithLoggers(tmp);
        var path = tmp["curves.png"];
        TrainingPlot.Write(path, trainer.History, 320, 200);
        var png = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 137, 80, 78, 71, 13, 10, 26, 10 }, png[..8]);
        int pos = 8;
        var chunks = new List<(string type, byte[] data)>();
        while (pos < png.Length)
        {
            int len = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos));
            var typeAndData = png.AsSpan(pos + 4, 4 + len);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(pos + 8 + len));
            var type = Encoding.ASCII.GetString(typeAndData[..4]);
            Assert.True(crc == Crc32Reference(typeAndData), $"bad CRC in chunk {type}");
            chunks.Add((type, typeAndData[4..].ToArray()));
            pos += 12 + len;
        }
        Assert.Equal(png.Length, pos);
        Assert.Equal("IHDR", chunks[0].type);
        Assert.Equal("IEND", chunks[^1].type);
        Assert.Empty(chunks[^1].data);
        var ihdr = chunks[0].data;
        Assert.Equal(13, ihdr.Length);
        Assert.Equal(320, BinaryPrimitives.ReadInt32BigEndian(ihdr));
        Assert.Equal(200, BinaryPrimitives.ReadInt32BigEndian(ihdr.AsSpan(4)));
        Assert.Equal(8, ihdr[8]);  // bit depth
        Assert.Equal(2, ihdr[9]);  // RGB
        // The image data inflates to one filter byte plus 3 bytes per pixel on each row, and is not blank.
        var idat = chunks.Where(c => c.type == "IDAT").SelectMany(c => c.data).ToArray();
        using var z = new ZLibStream(new MemoryStream(idat), CompressionMode.Decompress);
        var raw = new MemoryStream();
        z.CopyTo(raw);
        var pixels = raw.ToArray();
        Assert.Equal((320 * 3 + 1) * 200, pixels.Length);
        for (int y = 0; y < 200; y++) Assert.InRange(pixels[y * (320 * 3 + 1)], 0, 4);
        Assert.Contains(pixels, b => b != 255 && b != 0);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void PlotOfAnEmptyOrSingleEpochHistory()
    {
        using var tmp = new TempDir();
        TrainingPlot.Write(tmp["empty.png"], []);
        TrainingPlot.Write(tmp["one.png"], [new() { ["train_loss"] = 1.0, ["epoch"] = 0 }]);
        Assert.Equal((byte)137, File.ReadAllBytes(tmp["empty.png"])[0]);
        Assert.Equal((byte)137, File.ReadAllBytes(tmp["one.png"])[0]);
    }
}
