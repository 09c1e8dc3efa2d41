namespace Nabla;

/// <summary>
/// A flat buffer on a device (only the CPU today). Several tensors (views) may share one storage; the version
/// counter counts in-place writes so autograd can detect a saved tensor that was modified after use.
/// </summary>
public sealed class Storage
{
    public Array Data { get; }
    public DType DType { get; }
    public int Length => Data.Length;
    public Device Device => Device.Cpu;

    /// <summary>Bumped by every in-place write through any view of this storage.</summary>
    public int Version { get; internal set; }

    internal Storage(Array data, DType dtype)
    {
        Data = data;
        DType = dtype;
    }

    /// <summary>A new buffer; <paramref name="uninitialized"/> skips zeroing for outputs a kernel overwrites entirely.</summary>
    internal static Storage Allocate(DType dtype, int length, bool uninitialized = false) => uninitialized ? new(dtype switch
    {
        DType.Float32 => GC.AllocateUninitializedArray<float>(length),
        DType.Float64 => GC.AllocateUninitializedArray<double>(length),
        DType.Int64 => GC.AllocateUninitializedArray<long>(length),
        DType.Int32 => GC.AllocateUninitializedArray<int>(length),
        _ => Allocate(dtype, length).Data,
    }, dtype) : new(dtype switch
    {
        DType.Bool => new bool[length],
        DType.UInt8 => new byte[length],
        DType.Int8 => new sbyte[length],
        DType.Int32 => new int[length],
        DType.Int64 => new long[length],
        DType.Float16 => new Half[length],
        DType.BFloat16 => new BFloat16[length],
        DType.Float32 => new float[length],
        DType.Float64 => new double[length],
        DType.Int16 => new short[length],
        DType.UInt16 => new ushort[length],
        DType.UInt32 => new uint[length],
        DType.UInt64 => new ulong[length],
        _ => throw DTypes.Unknown(dtype),
    }, dtype);

    internal T[] As<T>() => (T[])Data;
}

/// <summary>Where a tensor's storage lives. Only the CPU exists today; the type is here so that APIs already carry it.</summary>
public readonly record struct Device(string Type, int Index = 0)
{
    public static readonly Device Cpu = new("cpu");
    public override string ToString() => Type;
}
