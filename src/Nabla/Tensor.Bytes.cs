using System.Runtime.InteropServices;

namespace Nabla;

// Raw little-endian element bytes in and out of tensors, for file formats (safetensors, checkpoints).
public sealed partial class Tensor
{
    /// <summary>
    /// A new contiguous tensor of <paramref name="shape"/> (an empty shape is 0-d) whose elements are copied from
    /// <paramref name="bytes"/> (little-endian, row-major), as torch.frombuffer reads a buffer but with a copy: one pass,
    /// into memory that <see cref="Dispose"/> recycles. Bool bytes are normalized: any nonzero byte reads as true.
    /// </summary>
    public static Tensor FromBytes(ReadOnlySpan<byte> bytes, DType dtype, int[] shape)
    {
        int n = ShapeUtil.Numel(shape);
        long expected = (long)n * dtype.ElementSize();
        if (bytes.Length != expected)
            throw new ShapeMismatchException($"from_bytes: {bytes.Length} bytes do not fill shape {ShapeUtil.Format(shape)} of {dtype.TorchName()} ({expected} bytes)");
        var storage = Storage.Allocate(dtype, n, uninitialized: true);   // every byte is written below
        bytes.CopyTo(ElementBytes(storage, 0, n));
        FixupAfterRead(storage, 0, n);
        return new Tensor(storage, (int[])shape.Clone());
    }

    /// <summary>The elements as little-endian, row-major bytes (a fresh array, one copy). Bool is written as 0 or 1.</summary>
    public byte[] ToBytes()
    {
        long size = (long)NumElements * DType.ElementSize();
        if (size > Array.MaxLength)
            throw new NablaException($"to_bytes: tensor of shape {ShapeUtil.Format(shape)} has {size} bytes, more than one array can hold");
        var result = new byte[size];
        var (st, off, temp) = ContiguousElements();
        try { ElementBytes(st, off, NumElements).CopyTo(result); }
        finally { temp?.Dispose(); }
        if (!BitConverter.IsLittleEndian) SwapElements(result, DType.ElementSize());
        return result;
    }

    /// <summary>
    /// The storage and offset of this tensor's elements in row-major order: its own when it is contiguous, else those of a
    /// contiguous copy made outside autograd (<c>Temp</c>, which the caller disposes when done). No tensor is made over
    /// this tensor's storage: one would count as an owner for good and keep a recyclable storage from ever being recycled
    /// (a served model's binary outputs were, through <see cref="ToBytes"/>).
    /// </summary>
    internal (Storage Storage, int Offset, Tensor? Temp) ContiguousElements()
    {
        if (IsContiguous) return (storage, offset, null);
        Tensor c;
        using (GradMode.NoGrad()) c = Contiguous();
        return (c.storage, c.offset, c);
    }

    /// <summary>
    /// The bytes of <paramref name="count"/> elements of a storage from element <paramref name="start"/>, in
    /// native byte order. Callers keep <c>count * ElementSize</c> under 2^31.
    /// </summary>
    internal static Span<byte> ElementBytes(Storage storage, int start, int count) => storage.DType switch
    {
        DType.Bool => MemoryMarshal.AsBytes(storage.As<bool>().AsSpan(start, count)),
        DType.UInt8 => storage.As<byte>().AsSpan(start, count),
        DType.Int8 => MemoryMarshal.AsBytes(storage.As<sbyte>().AsSpan(start, count)),
        DType.Int32 => MemoryMarshal.AsBytes(storage.As<int>().AsSpan(start, count)),
        DType.Int64 => MemoryMarshal.AsBytes(storage.As<long>().AsSpan(start, count)),
        DType.Float16 => MemoryMarshal.AsBytes(storage.As<Half>().AsSpan(start, count)),
        DType.BFloat16 => MemoryMarshal.AsBytes(storage.As<BFloat16>().AsSpan(start, count)),
        DType.Float32 => MemoryMarshal.AsBytes(storage.As<float>().AsSpan(start, count)),
        DType.Float64 => MemoryMarshal.AsBytes(storage.As<double>().AsSpan(start, count)),
        DType.Int16 => MemoryMarshal.AsBytes(storage.As<short>().AsSpan(start, count)),
        DType.UInt16 => MemoryMarshal.AsBytes(storage.As<ushort>().AsSpan(start, count)),
        DType.UInt32 => MemoryMarshal.AsBytes(storage.As<uint>().AsSpan(start, count)),
        DType.UInt64 => MemoryMarshal.AsBytes(storage.As<ulong>().AsSpan(start, count)),
        _ => throw DTypes.Unknown(storage.DType),
    };

    /// <summary>
    /// After little-endian file bytes were copied into elements [start, start + count) of a storage: swaps them
    /// to native order on big-endian machines and turns every nonzero bool byte into a proper true.
    /// </summary>
    internal static void FixupAfterRead(Storage storage, int start, int count)
    {
        if (storage.DType == DType.Bool)
        {
            var raw = ElementBytes(storage, start, count);
            for (int i = 0; i < raw.Length; i++) raw[i] = raw[i] != 0 ? (byte)1 : (byte)0;
            return;
        }
        if (!BitConverter.IsLittleEndian) SwapElements(ElementBytes(storage, start, count), storage.DType.ElementSize());
    }

    /// <summary>Reverses the byte order of each element of <paramref name="size"/> bytes.</summary>
    internal static void SwapElements(Span<byte> bytes, int size)
    {
        if (size == 1) return;
        for (int i = 0; i + size <= bytes.Length; i += size) bytes.Slice(i, size).Reverse();
    }
}
