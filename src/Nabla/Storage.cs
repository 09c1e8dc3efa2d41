namespace Nabla;

/// <summary>
/// A flat buffer on a device (only the CPU today). Several tensors (views) may share one storage; the version
/// counter counts in-place writes so autograd can detect a saved tensor that was modified after use.
/// </summary>
/// <remarks>
/// Large buffers (see <see cref="StorageCache.MinBytes"/>) count the tensors that share them. When every one of them
/// has been disposed and nothing else holds the storage (an autograd node that has not run backward yet, a gradient,
/// optimizer state, a module, a graph), its array goes to <see cref="StorageCache"/>
/// for the next allocation of the same dtype and length, and this storage becomes unusable: reading it throws
/// <see cref="ObjectDisposedException"/>, so a stale tensor can never see another tensor's data. A storage whose
/// tensors are left to the GC is freed by the GC as before.
/// </remarks>
public sealed class Storage
{
    Array? data;
    readonly int length;
    int owners, pins;
    bool kept;

    /// <summary>
    /// The elements. Throws <see cref="ObjectDisposedException"/> once the storage was recycled. A caller that keeps this
    /// array beyond the tensors' lifetime and disposes them will see it reused: keep the tensor instead, or copy.
    /// </summary>
    public Array Data => data ?? throw Disposed();
    public DType DType { get; }
    public int Length => length;
    public Device Device => Device.Cpu;

    /// <summary>Bumped by every in-place write through any view of this storage.</summary>
    public int Version { get; internal set; }

    /// <summary>True for buffers allocated by Nabla that are large enough to be recycled when their tensors are disposed.</summary>
    internal bool Recyclable { get; }

    /// <summary>True once every tensor over a recyclable storage was disposed and its array went back to the cache.</summary>
    public bool IsDisposed => data is null;

    internal Storage(Array data, DType dtype) : this(data, dtype, recyclable: false) { }

    Storage(Array data, DType dtype, bool recyclable)
    {
        this.data = data;
        length = data.Length;
        DType = dtype;
        Recyclable = recyclable;
    }

    /// <summary>
    /// A new buffer; <paramref name="uninitialized"/> skips zeroing for outputs a kernel overwrites entirely. Large
    /// buffers come from <see cref="StorageCache"/> when it holds one of this dtype and length.
    /// </summary>
    internal static Storage Allocate(DType dtype, int length, bool uninitialized = false)
    {
        if ((long)length * dtype.ElementSize() < StorageCache.MinBytes) return new(NewArray(dtype, length, uninitialized), dtype);
        var cached = StorageCache.Take(dtype, length);
        // NOTE: only the four dtypes that had uninitialized arrays before the cache may come back dirty; the others
        // were always zeroed, and stay so.
        if (cached is not null && (!uninitialized || dtype is not (DType.Float32 or DType.Float64 or DType.Int64 or DType.Int32)))
            Array.Clear(cached);
        return new(cached ?? NewArray(dtype, length, uninitialized), dtype, recyclable: true);
    }

    static Array NewArray(DType dtype, int length, bool uninitialized) => uninitialized ? dtype switch
    {
        DType.Float32 => GC.AllocateUninitializedArray<float>(length),
        DType.Float64 => GC.AllocateUninitializedArray<double>(length),
        DType.Int64 => GC.AllocateUninitializedArray<long>(length),
        DType.Int32 => GC.AllocateUninitializedArray<int>(length),
        _ => NewArray(dtype, length, uninitialized: false),
    } : dtype switch
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
    };

    /// <summary>A tensor over this storage was created (recyclable storages only).</summary>
    internal void AddOwner() => Interlocked.Increment(ref owners);

    /// <summary>
    /// An autograd node may read this storage in its backward rule: not recycled until the node lets go
    /// (<see cref="Unpin"/>, when backward has run it and freed its saved tensors).
    /// </summary>
    internal void Pin() => Interlocked.Increment(ref pins);

    internal void Unpin()
    {
        if (Interlocked.Decrement(ref pins) == 0 && Volatile.Read(ref owners) == 0) Recycle();
    }

    /// <summary>
    /// Something long-lived holds this storage (a gradient the caller set or read, an optimizer's state, a module's parameter
    /// or buffer, a graph's weights or a trace): it is never recycled, whatever is disposed; the GC frees it when that
    /// holder goes. (A gradient nobody read is pinned instead, see <see cref="Tensor.Grad"/>.)
    /// </summary>
    internal void Keep() => Volatile.Write(ref kept, true);

    /// <summary>A tensor over this storage was disposed; the last one hands the array to the cache unless it is held.</summary>
    internal void ReleaseOwner()
    {
        if (Interlocked.Decrement(ref owners) == 0 && Volatile.Read(ref pins) == 0) Recycle();
    }

    void Recycle()
    {
        if (Volatile.Read(ref kept) || !Recyclable) return;
        var a = Interlocked.Exchange(ref data, null);
        if (a is not null) StorageCache.Give(a, DType);
    }

    ObjectDisposedException Disposed() =>
        new(nameof(Tensor), $"the storage of this {DType.TorchName()} tensor ({length} elements) was recycled after every tensor over it was disposed");

    internal T[] As<T>() => (T[])Data;
}

/// <summary>Where a tensor's storage lives. Only the CPU exists today; the type is here so that APIs already carry it.</summary>
public readonly record struct Device(string Type, int Index = 0)
{
    public static readonly Device Cpu = new("cpu");
    public override string ToString() => Type;
}
