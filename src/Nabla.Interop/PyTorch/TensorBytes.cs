using System.Runtime.InteropServices;

namespace Nabla.Interop;

/// <summary>Little-endian element bytes to and from tensors, through Nabla's public array API.</summary>
internal static class TensorBytes
{
    public static Tensor FromBytes(byte[] bytes, DType dtype, int[] shape)
    {
        var t = dtype switch
        {
            DType.Bool => Make(bytes.Select(b => b != 0).ToArray(), shape),
            DType.UInt8 => Make(bytes, shape),
            DType.Int8 => Make(MemoryMarshal.Cast<byte, sbyte>(bytes).ToArray(), shape),
            DType.Int32 => Make(MemoryMarshal.Cast<byte, int>(bytes).ToArray(), shape),
            DType.Int64 => Make(MemoryMarshal.Cast<byte, long>(bytes).ToArray(), shape),
            DType.Float16 => Make(MemoryMarshal.Cast<byte, Half>(bytes).ToArray(), shape),
            DType.BFloat16 => Make(MemoryMarshal.Cast<byte, ushort>(bytes).ToArray().Select(BFloat16.FromBits).ToArray(), shape),
            DType.Float32 => Make(MemoryMarshal.Cast<byte, float>(bytes).ToArray(), shape),
            DType.Float64 => Make(MemoryMarshal.Cast<byte, double>(bytes).ToArray(), shape),
            DType.Int16 => Make(MemoryMarshal.Cast<byte, short>(bytes).ToArray(), shape),
            DType.UInt16 => Make(MemoryMarshal.Cast<byte, ushort>(bytes).ToArray(), shape),
            DType.UInt32 => Make(MemoryMarshal.Cast<byte, uint>(bytes).ToArray(), shape),
            DType.UInt64 => Make(MemoryMarshal.Cast<byte, ulong>(bytes).ToArray(), shape),
            _ => throw new DTypeException($"dtype {dtype} has no byte layout"),
        };
        return t;
    }

    static Tensor Make<T>(T[] data, int[] shape)
    {
        // NOTE: FromArray treats an empty shape as 1-D; a 0-d tensor is a one-element vector reshaped to [].
        if (shape.Length == 0) return Tensor.FromArray(data, 1).Reshape([]);
        return Tensor.FromArray(data, shape);
    }

    /// <summary>The elements in row-major order as little-endian bytes.</summary>
    public static byte[] ToBytes(Tensor t) => t.DType switch
    {
        DType.Bool => t.ToArray<bool>().Select(b => b ? (byte)1 : (byte)0).ToArray(),
        DType.UInt8 => t.ToArray<byte>(),
        DType.Int8 => MemoryMarshal.AsBytes(t.ToArray<sbyte>().AsSpan()).ToArray(),
        DType.Int32 => MemoryMarshal.AsBytes(t.ToArray<int>().AsSpan()).ToArray(),
        DType.Int64 => MemoryMarshal.AsBytes(t.ToArray<long>().AsSpan()).ToArray(),
        DType.Float16 => MemoryMarshal.AsBytes(t.ToArray<Half>().AsSpan()).ToArray(),
        DType.BFloat16 => MemoryMarshal.AsBytes(t.ToArray<BFloat16>().AsSpan()).ToArray(),
        DType.Float32 => MemoryMarshal.AsBytes(t.ToArray<float>().AsSpan()).ToArray(),
        DType.Float64 => MemoryMarshal.AsBytes(t.ToArray<double>().AsSpan()).ToArray(),
        DType.Int16 => MemoryMarshal.AsBytes(t.ToArray<short>().AsSpan()).ToArray(),
        DType.UInt16 => MemoryMarshal.AsBytes(t.ToArray<ushort>().AsSpan()).ToArray(),
        DType.UInt32 => MemoryMarshal.AsBytes(t.ToArray<uint>().AsSpan()).ToArray(),
        DType.UInt64 => MemoryMarshal.AsBytes(t.ToArray<ulong>().AsSpan()).ToArray(),
        _ => throw new DTypeException($"dtype {t.DType} has no byte layout"),
    };
}
