using System.Buffers.Binary;
using System.IO.Compression;

namespace Nabla.Data;

/// <summary>
/// Reader of the IDX format used by MNIST and Fashion-MNIST (optionally gzip-compressed): a magic number
/// (two zero bytes, a type code, the rank), big-endian dimension sizes, then the data.
/// </summary>
public static class Idx
{
    public static Tensor Read(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"idx: file not found: {path}");
        using var f = File.OpenRead(path);
        return Read(f, path);
    }

    /// <summary>Reads from a stream; <paramref name="name"/> names the source in errors.</summary>
    public static Tensor Read(Stream stream, string name)
    {
        var ms = new MemoryStream();
        stream.CopyTo(ms);
        byte[] raw = ms.ToArray();
        if (IsGzip(raw)) raw = Gunzip(raw, "idx: " + name);
        if (raw.Length < 4) throw new DataFormatException($"idx: {name}: file is too short for an IDX header ({raw.Length} bytes)");
        if (raw[0] != 0 || raw[1] != 0) throw new DataFormatException($"idx: {name}: bad magic number (first two bytes must be zero, got 0x{raw[0]:x2}{raw[1]:x2})");
        byte type = raw[2];
        int rank = raw[3];
        if (rank == 0 || rank > 8) throw new DataFormatException($"idx: {name}: unsupported rank {rank}");
        if (raw.Length < 4 + 4 * rank) throw new DataFormatException($"idx: {name}: truncated header (needs {4 + 4 * rank} bytes, has {raw.Length})");
        var shape = new int[rank];
        long count = 1;
        for (int i = 0; i < rank; i++)
        {
            uint d = BinaryPrimitives.ReadUInt32BigEndian(raw.AsSpan(4 + 4 * i));
            if (d > int.MaxValue) throw new DataFormatException($"idx: {name}: dimension {i} has an invalid size {d}");
            shape[i] = (int)d;
            count *= d;
        }
        int elem = type switch { 0x08 or 0x09 => 1, 0x0B => 2, 0x0C or 0x0D => 4, 0x0E => 8, _ => throw new DataFormatException($"idx: {name}: unknown data type code 0x{type:x2}") };
        long need = 4 + 4L * rank + count * elem;
        if (raw.Length < need) throw new DataFormatException($"idx: {name}: truncated data: shape [{string.Join(", ", shape)}] needs {need} bytes, the file has {raw.Length}");
        if (raw.Length > need) throw new DataFormatException($"idx: {name}: {raw.Length - need} unexpected bytes after the data of shape [{string.Join(", ", shape)}]");
        var data = raw.AsSpan((int)(4 + 4 * rank));
        switch (type)
        {
            case 0x08: return new Tensor(new Storage(data.ToArray(), DType.UInt8), shape);
            case 0x09: return Tensor.FromArray(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(data).ToArray(), shape);
            case 0x0C:
            {
                var v = new int[count];
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt32BigEndian(data[(4 * i)..]);
                return Tensor.FromArray(v, shape);
            }
            case 0x0D:
            {
                var v = new float[count];
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadSingleBigEndian(data[(4 * i)..]);
                return Tensor.FromArray(v, shape);
            }
            case 0x0E:
            {
                var v = new double[count];
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadDoubleBigEndian(data[(8 * i)..]);
                return Tensor.FromArray(v, shape);
            }
            default: throw new DataFormatException($"idx: {name}: data type 0x{type:x2} (int16) is not supported");
        }
    }

    internal static bool IsGzip(byte[] bytes) => bytes.Length >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;

    /// <summary>
    /// Decompresses a gzip file and checks its trailer (CRC-32 and length of the contents), because the
    /// decompressor returns a truncated stream's partial data without an error.
    /// </summary>
    /// <remarks>NOTE: the trailer checked is the last member's, so multi-member (concatenated) gzip files are not supported.</remarks>
    internal static byte[] Gunzip(byte[] raw, string source)
    {
        byte[] content;
        try
        {
            using var gz = new GZipStream(new MemoryStream(raw), CompressionMode.Decompress);
            var outMs = new MemoryStream();
            gz.CopyTo(outMs);
            content = outMs.ToArray();
        }
        catch (InvalidDataException e)
        {
            throw new DataFormatException($"{source}: the gzip stream is corrupt or truncated ({e.Message})", e);
        }
        if (raw.Length < 18)
            throw new DataFormatException($"{source}: the gzip stream is truncated ({raw.Length} bytes)");
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(raw.Length - 8));
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(raw.Length - 4));
        if (size != (uint)content.Length || crc != Crc32(content))
            throw new DataFormatException($"{source}: the gzip stream is truncated or corrupt: its trailer records {size} bytes with CRC-32 0x{crc:x8}, " +
                $"but it decompresses to {content.Length} bytes with CRC-32 0x{Crc32(content):x8}");
        return content;
    }

    static readonly uint[] CrcTable = BuildCrcTable();

    static uint[] BuildCrcTable()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }

    /// <summary>The CRC-32 (IEEE) that gzip stores.</summary>
    static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (var b in data) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }
}
