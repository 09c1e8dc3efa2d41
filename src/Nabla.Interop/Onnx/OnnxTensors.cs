using System.Runtime.InteropServices;
using Google.Protobuf;
using Nabla.Interop.Onnx.Proto;

namespace Nabla.Interop.Onnx;

/// <summary>ONNX TensorProto data types and their Nabla counterparts.</summary>
internal static class OnnxTypes
{
    public const int Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7, String = 8, Bool = 9,
        Float16 = 10, Double = 11, UInt32 = 12, UInt64 = 13, BFloat16 = 16;

    static readonly string[] Names =
    [
        "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL", "FLOAT16", "DOUBLE",
        "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2",
    ];

    public static string Name(int t) => t >= 0 && t < Names.Length ? Names[t] : $"data type {t}";

    public static DType? TryToDType(int t) => t switch
    {
        Float => DType.Float32,
        UInt8 => DType.UInt8,
        Int8 => DType.Int8,
        Int32 => DType.Int32,
        Int64 => DType.Int64,
        Bool => DType.Bool,
        Float16 => DType.Float16,
        Double => DType.Float64,
        BFloat16 => DType.BFloat16,
        Int16 => DType.Int16,
        UInt16 => DType.UInt16,
        UInt32 => DType.UInt32,
        UInt64 => DType.UInt64,
        _ => null,
    };

    public static DType ToDType(int t, string where) =>
        TryToDType(t) ?? throw new ModelFormatException($"{where}: unsupported element type {Name(t)}");

    public static int FromDType(DType t) => t switch
    {
        DType.Float32 => Float,
        DType.UInt8 => UInt8,
        DType.Int8 => Int8,
        DType.Int32 => Int32,
        DType.Int64 => Int64,
        DType.Bool => Bool,
        DType.Float16 => Float16,
        DType.Float64 => Double,
        DType.BFloat16 => BFloat16,
        DType.Int16 => Int16,
        DType.UInt16 => UInt16,
        DType.UInt32 => UInt32,
        DType.UInt64 => UInt64,
        _ => throw new DTypeException($"unknown dtype value {(int)t}"),
    };
}

/// <summary>Decodes TensorProto messages into Nabla tensors (raw_data, the typed fields, or external data).</summary>
internal static class OnnxTensors
{
    /// <summary>Reads a file holding one serialized TensorProto (a backend test's input_N.pb).</summary>
    public static Tensor ReadTensorFile(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new ModelFormatException($"{path}: {e.Message}", e); }
        TensorProto proto;
        try { proto = TensorProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException e) { throw new ModelFormatException($"{path}: not a TensorProto: {e.Message}", e); }
        return ToTensor(proto, Path.GetDirectoryName(Path.GetFullPath(path)), path);
    }

    /// <param name="baseDir">Folder of the model file, for external data; null forbids external data.</param>
    /// <param name="where">File and tensor named in errors.</param>
    /// <param name="detached">The tensor's data field, left in the model file by <see cref="OnnxPayloads"/>.</param>
    public static Tensor ToTensor(TensorProto p, string? baseDir, string where, OnnxPayloads.Payload? detached = null)
    {
        where = p.Name.Length > 0 ? $"{where}: tensor '{p.Name}'" : where;
        if (p.Segment is not null) throw new ModelFormatException($"{where}: unsupported segmented tensor");
        var shape = new int[p.Dims.Count];
        long numel = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            long d = p.Dims[i];
            if (d < 0 || d > int.MaxValue) throw new ModelFormatException($"{where}: dimension {i} is {d}");
            shape[i] = (int)d;
            numel *= d;
            if (numel > Array.MaxLength) throw new ModelFormatException($"{where}: {numel}+ elements are too many for one tensor");
        }
        if (p.DataType == OnnxTypes.String)
        {
            if (p.StringData.Count != numel)
                throw new ModelFormatException($"{where}: string_data has {p.StringData.Count} values, shape {Format(shape)} needs {numel}");
            return new StringTensor([.. p.StringData.Select(b => b.ToByteArray())], shape).ToCarrier();
        }
        var dtype = OnnxTypes.ToDType(p.DataType, where);
        int n = (int)numel;
        int size = dtype.ElementSize();

        if (p.DataLocation == TensorProto.Types.DataLocation.External)
            return ReadExternal(p, baseDir, where, (long)n * size, dtype, shape, n);
        if (detached is var (file, offset, length, field))
        {
            if (field == OnnxPayloads.Field.FloatData && dtype != DType.Float32 || field == OnnxPayloads.Field.DoubleData && dtype != DType.Float64)
                throw new InvalidOperationException($"{where}: a detached {field} for a {OnnxTypes.Name(p.DataType)} tensor");   // the walker detaches only matching ones
            // The messages a whole-file parse would give: raw_data counts bytes, the typed fields values.
            if (length != (long)n * size)
                throw new ModelFormatException(field == OnnxPayloads.Field.RawData
                    ? $"{where}: raw_data has {length} bytes, shape {Format(shape)} of {OnnxTypes.Name(p.DataType)} needs {(long)n * size}"
                    : $"{where}: {(field == OnnxPayloads.Field.FloatData ? "float_data" : "double_data")} has {length / size}{(length % size != 0 ? "+" : "")} values, shape {Format(shape)} needs {n}");
            return ReadTyped(file, offset, length, dtype, shape, n, where);
        }
        if (p.HasRawData)
        {
            var raw = p.RawData.Span;
            if (raw.Length != (long)n * size)
                throw new ModelFormatException($"{where}: raw_data has {raw.Length} bytes, shape {Format(shape)} of {OnnxTypes.Name(p.DataType)} needs {(long)n * size}");
            return FromLittleEndian(raw, dtype, shape, where);
        }
        switch (dtype)
        {
            case DType.Float32: return Typed(p.FloatData.ToArray(), n, shape, where, "float_data");
            case DType.Float64: return Typed(p.DoubleData.ToArray(), n, shape, where, "double_data");
            case DType.Int64: return Typed(p.Int64Data.ToArray(), n, shape, where, "int64_data");
            case DType.Int32: return Typed(p.Int32Data.ToArray(), n, shape, where, "int32_data");
            // UINT32 and UINT64 sit in uint64_data (onnx.proto); UINT32 keeps the low 32 bits.
            case DType.UInt64: return Typed(p.Uint64Data.ToArray(), n, shape, where, "uint64_data");
            case DType.UInt32: return Typed(p.Uint64Data.Select(v => unchecked((uint)v)).ToArray(), n, shape, where, "uint64_data");
        }
        // The narrow types sit one per int32_data entry (16-bit floats as their bit pattern).
        var ints = p.Int32Data;
        if (ints.Count != n)
            throw new ModelFormatException($"{where}: int32_data has {ints.Count} values, shape {Format(shape)} needs {n}");
        switch (dtype)
        {
            case DType.Bool: return Tensor.AsTensor(ints.Select(v => v != 0).ToArray(), n).Reshape(shape);
            case DType.UInt8: return Tensor.AsTensor(ints.Select(v => (byte)v).ToArray(), n).Reshape(shape);
            case DType.Int8: return Tensor.AsTensor(ints.Select(v => (sbyte)v).ToArray(), n).Reshape(shape);
            case DType.Float16: return Tensor.AsTensor(ints.Select(v => BitConverter.UInt16BitsToHalf((ushort)v)).ToArray(), n).Reshape(shape);
            case DType.Int16: return Tensor.AsTensor(ints.Select(v => unchecked((short)v)).ToArray(), n).Reshape(shape);
            case DType.UInt16: return Tensor.AsTensor(ints.Select(v => unchecked((ushort)v)).ToArray(), n).Reshape(shape);
            default: return Tensor.AsTensor(ints.Select(v => BFloat16.FromBits((ushort)v)).ToArray(), n).Reshape(shape);
        }
    }

    static Tensor Typed<T>(T[] data, int n, int[] shape, string where, string field)
    {
        if (data.Length != n)
            throw new ModelFormatException($"{where}: {field} has {data.Length} values, shape {Format(shape)} needs {n}");
        return Tensor.AsTensor(data, n).Reshape(shape);
    }

    static string Format(int[] shape) => "[" + string.Join(", ", shape) + "]";

    static Tensor FromLittleEndian(ReadOnlySpan<byte> raw, DType dtype, int[] shape, string where)
    {
        if (!BitConverter.IsLittleEndian) throw new ModelFormatException($"{where}: big-endian hosts are not supported");
        int n = raw.Length / Math.Max(1, dtype.ElementSize());
        return dtype switch
        {
            DType.Float32 => Tensor.AsTensor(MemoryMarshal.Cast<byte, float>(raw).ToArray(), n).Reshape(shape),
            DType.Float64 => Tensor.AsTensor(MemoryMarshal.Cast<byte, double>(raw).ToArray(), n).Reshape(shape),
            DType.Int64 => Tensor.AsTensor(MemoryMarshal.Cast<byte, long>(raw).ToArray(), n).Reshape(shape),
            DType.Int32 => Tensor.AsTensor(MemoryMarshal.Cast<byte, int>(raw).ToArray(), n).Reshape(shape),
            DType.UInt8 => Tensor.AsTensor(raw.ToArray(), n).Reshape(shape),
            DType.Int8 => Tensor.AsTensor(MemoryMarshal.Cast<byte, sbyte>(raw).ToArray(), n).Reshape(shape),
            DType.Bool => Tensor.AsTensor(raw.ToArray().Select(b => b != 0).ToArray(), n).Reshape(shape),
            DType.Float16 => Tensor.AsTensor(MemoryMarshal.Cast<byte, Half>(raw).ToArray(), n).Reshape(shape),
            DType.BFloat16 => Tensor.AsTensor(MemoryMarshal.Cast<byte, ushort>(raw).ToArray().Select(BFloat16.FromBits).ToArray(), n).Reshape(shape),
            DType.Int16 => Tensor.AsTensor(MemoryMarshal.Cast<byte, short>(raw).ToArray(), n).Reshape(shape),
            DType.UInt16 => Tensor.AsTensor(MemoryMarshal.Cast<byte, ushort>(raw).ToArray(), n).Reshape(shape),
            DType.UInt32 => Tensor.AsTensor(MemoryMarshal.Cast<byte, uint>(raw).ToArray(), n).Reshape(shape),
            DType.UInt64 => Tensor.AsTensor(MemoryMarshal.Cast<byte, ulong>(raw).ToArray(), n).Reshape(shape),
            _ => throw new DTypeException($"unknown dtype value {(int)dtype}"),
        };
    }

    /// <summary>Little-endian elements at <paramref name="offset"/> of a file, read straight into the array the tensor
    /// keeps (types that need converting, or are rare in weights, go through the bytes as inline raw_data does).</summary>
    static Tensor ReadTyped(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, int length, DType dtype, int[] shape, int n, string where)
    {
        if (!BitConverter.IsLittleEndian) throw new ModelFormatException($"{where}: big-endian hosts are not supported");
        return dtype switch
        {
            DType.Float32 => Tensor.AsTensor(OnnxPayloads.Read<float>(file, offset, length, where), n).Reshape(shape),
            DType.Float64 => Tensor.AsTensor(OnnxPayloads.Read<double>(file, offset, length, where), n).Reshape(shape),
            DType.Int64 => Tensor.AsTensor(OnnxPayloads.Read<long>(file, offset, length, where), n).Reshape(shape),
            DType.Int32 => Tensor.AsTensor(OnnxPayloads.Read<int>(file, offset, length, where), n).Reshape(shape),
            DType.Float16 => Tensor.AsTensor(OnnxPayloads.Read<Half>(file, offset, length, where), n).Reshape(shape),
            DType.UInt8 => Tensor.AsTensor(OnnxPayloads.Read<byte>(file, offset, length, where), n).Reshape(shape),
            _ => FromLittleEndian(OnnxPayloads.Read<byte>(file, offset, length, where), dtype, shape, where),
        };
    }

    /// <summary>A tensor whose data lies in another file of the model's folder, read from it straight into the tensor.</summary>
    static Tensor ReadExternal(TensorProto p, string? baseDir, string where, long expected, DType dtype, int[] shape, int n)
    {
        if (baseDir is null) throw new ModelFormatException($"{where}: external data needs the model's folder");
        string? location = null;
        long offset = 0, length = -1;
        foreach (var kv in p.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset":
                    if (!long.TryParse(kv.Value, out offset) || offset < 0) throw new ModelFormatException($"{where}: external data offset '{kv.Value}' is not valid");
                    break;
                case "length":
                    if (!long.TryParse(kv.Value, out length) || length < 0) throw new ModelFormatException($"{where}: external data length '{kv.Value}' is not valid");
                    break;
            }
        }
        if (string.IsNullOrEmpty(location)) throw new ModelFormatException($"{where}: external data has no location");
        if (Path.IsPathRooted(location) || location.Split('/', '\\').Contains(".."))
            throw new ModelFormatException($"{where}: external data location '{location}' must be a relative path inside the model's folder");
        if (length >= 0 && length != expected)
            throw new ModelFormatException($"{where}: external data length {length} does not match the {expected} bytes the shape needs");
        var file = Path.Combine(baseDir, location);
        try
        {
            using var handle = File.OpenHandle(file, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
            long fileLength = RandomAccess.GetLength(handle);
            if (offset + expected > fileLength)
                throw new ModelFormatException($"{where}: external file '{location}' has {fileLength} bytes, need {expected} from offset {offset}");
            if (expected > Array.MaxLength) throw new ModelFormatException($"{where}: {expected} bytes of external data are too many for one tensor");
            return ReadTyped(handle, offset, (int)expected, dtype, shape, n, where);
        }
        catch (IOException e) { throw new ModelFormatException($"{where}: cannot read external data '{location}': {e.Message}", e); }
        catch (UnauthorizedAccessException e) { throw new ModelFormatException($"{where}: cannot read external data '{location}': {e.Message}", e); }
    }
}
