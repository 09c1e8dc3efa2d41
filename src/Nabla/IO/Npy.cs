using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Nabla.IO;

/// <summary>
/// NumPy's .npy format: magic, version, a Python-dict header ('descr', 'fortran_order', 'shape') padded to a
/// 64-byte boundary, then the raw elements. Object arrays (pickles) are refused.
/// </summary>
public static partial class Npy
{
    static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static Tensor Load(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"npy: file not found: {path}");
        return Read(File.ReadAllBytes(path), path);
    }

    public static Tensor Read(byte[] b, string name)
    {
        if (b.Length < 10 || !b.AsSpan(0, 6).SequenceEqual(Magic)) throw new ModelFormatException($"npy: {name} is not a .npy file (bad magic)");
        int major = b[6];
        int lenSize = major == 1 ? 2 : major is 2 or 3 ? 4 : throw new ModelFormatException($"npy: {name}: unsupported format version {major}");
        if (b.Length < 8 + lenSize) throw new ModelFormatException($"npy: {name}: truncated header");
        long hlen = lenSize == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(8)) : BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(8));
        long dataStart = 8 + lenSize + hlen;
        if (hlen > 1 << 20 || dataStart > b.Length) throw new ModelFormatException($"npy: {name}: header length {hlen} runs past the end of the file ({b.Length} bytes)");
        var header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(b, 8 + lenSize, (int)hlen);
        var descr = DescrRegex().Match(header);
        var fortran = FortranRegex().Match(header);
        var shapeM = ShapeRegex().Match(header);
        if (!descr.Success || !fortran.Success || !shapeM.Success)
            throw new ModelFormatException($"npy: {name}: malformed header {header.Trim()}");
        var d = descr.Groups[1].Value;
        var (dtype, size, bigEndian) = d switch
        {
            "<f4" or "=f4" => (DType.Float32, 4, false), ">f4" => (DType.Float32, 4, true),
            "<f8" or "=f8" => (DType.Float64, 8, false), ">f8" => (DType.Float64, 8, true),
            "<f2" or "=f2" => (DType.Float16, 2, false), ">f2" => (DType.Float16, 2, true),
            "<i8" or "=i8" => (DType.Int64, 8, false), ">i8" => (DType.Int64, 8, true),
            "<i4" or "=i4" => (DType.Int32, 4, false), ">i4" => (DType.Int32, 4, true),
            "<i2" or "=i2" => (DType.Int16, 2, false), ">i2" => (DType.Int16, 2, true),
            "<u2" or "=u2" => (DType.UInt16, 2, false), ">u2" => (DType.UInt16, 2, true),
            "<u4" or "=u4" => (DType.UInt32, 4, false), ">u4" => (DType.UInt32, 4, true),
            "<u8" or "=u8" => (DType.UInt64, 8, false), ">u8" => (DType.UInt64, 8, true),
            "|i1" or "<i1" or "=i1" => (DType.Int8, 1, false),
            "|u1" or "<u1" or "=u1" => (DType.UInt8, 1, false),
            "|b1" or "<b1" or "=b1" => (DType.Bool, 1, false),
            _ => throw new ModelFormatException($"npy: {name}: dtype '{d}' is not supported (object arrays are never loaded)"),
        };
        var dims = shapeM.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var shape = new int[dims.Length];
        long count = 1;
        for (int i = 0; i < dims.Length; i++)
        {
            if (!int.TryParse(dims[i].TrimEnd('L'), NumberStyles.None, CultureInfo.InvariantCulture, out shape[i]))
                throw new ModelFormatException($"npy: {name}: bad dimension '{dims[i]}' in shape");
            count *= shape[i];
        }
        if (dataStart + count * size != b.Length)
            throw new ModelFormatException($"npy: {name}: shape ({string.Join(", ", shape)}) of {d} needs {count * size} data bytes, the file has {b.Length - dataStart}");
        var data = b.AsSpan((int)dataStart, (int)(count * size)).ToArray();
        if (bigEndian) Tensor.SwapElements(data, size);
        bool isFortran = fortran.Groups[1].Value == "True";
        if (!isFortran) return Tensor.FromBytes(data, dtype, shape);
        // Fortran order: the bytes are the transpose's C order.
        var rev = shape.Reverse().ToArray();
        var t = Tensor.FromBytes(data, dtype, rev);
        return t.Permute(Enumerable.Range(0, shape.Length).Reverse().ToArray()).Contiguous();
    }

    /// <summary>Writes a version-1 .npy (C order, little endian), as numpy.save does.</summary>
    public static void Save(string path, Tensor t)
    {
        var descr = t.DType switch
        {
            DType.Float32 => "<f4", DType.Float64 => "<f8", DType.Float16 => "<f2", DType.Int64 => "<i8", DType.Int32 => "<i4",
            DType.Int8 => "|i1", DType.UInt8 => "|u1", DType.Bool => "|b1",
            DType.Int16 => "<i2", DType.UInt16 => "<u2", DType.UInt32 => "<u4", DType.UInt64 => "<u8",
            _ => throw new DTypeException($"npy: {t.DType.TorchName()} has no NumPy dtype"),
        };
        var shape = t.Shape;
        var shapeText = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        var dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shapeText}, }}";
        int total = 10 + dict.Length + 1;
        int pad = (64 - total % 64) % 64;
        var header = dict + new string(' ', pad) + "\n";
        var bytes = t.Contiguous().ToBytes();
        var tmp = path + ".tmp";
        using (var f = File.Create(tmp))
        {
            f.Write(Magic);
            f.WriteByte(1);
            f.WriteByte(0);
            Span<byte> len = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length);
            f.Write(len);
            f.Write(Encoding.Latin1.GetBytes(header));
            f.Write(bytes);
        }
        File.Move(tmp, path, overwrite: true);
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']+)'")]
    private static partial Regex DescrRegex();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranRegex();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapeRegex();
}
