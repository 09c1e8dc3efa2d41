namespace Nabla.Interop;

/// <summary>
/// A storage named by a persistent id: its element type (null for an untyped or unsupported storage class), its
/// element count and where its bytes come from. Bytes load lazily, once.
/// </summary>
internal sealed class StorageRef
{
    public required string Key { get; init; }
    /// <summary>The storage class name, e.g. torch.FloatStorage, for messages.</summary>
    public required string ClassName { get; init; }
    /// <summary>Element type of a typed storage; null for torch.UntypedStorage (counts bytes) or an unsupported class.</summary>
    public DType? DType { get; init; }
    /// <summary>Element size in bytes of the storage class (1 for untyped).</summary>
    public required int ElementSize { get; init; }
    /// <summary>Why the class cannot be loaded, when it cannot (quantized, complex, int16, ...).</summary>
    public string? Unsupported { get; init; }
    /// <summary>Element count declared by the persistent id.</summary>
    public required long Numel { get; init; }
    public long ByteLength => Numel * ElementSize;

    /// <summary>Fetches the storage's bytes (exactly <see cref="ByteLength"/> of them, file byte order).</summary>
    public Func<byte[]>? Loader { get; set; }
    /// <summary>For a legacy storage view: the root storage and the byte offset of the view in it.</summary>
    public StorageRef? Root { get; init; }
    public long RootByteOffset { get; init; }

    byte[]? data;

    public ReadOnlySpan<byte> Bytes()
    {
        if (Root is not null)
            return Root.Bytes().Slice(checked((int)RootByteOffset), checked((int)ByteLength));
        if (data is null)
        {
            if (Loader is null) throw new InvalidOperationException($"storage '{Key}' has no data");
            data = Loader();
        }
        return data;
    }

    internal void SetData(byte[] bytes) => data = bytes;
}

/// <summary>A tensor to build from a storage once all storages are readable (legacy files put data after the pickle).</summary>
internal sealed class TensorRef
{
    public required StorageRef Storage { get; init; }
    public required DType DType { get; init; }
    public required long Offset { get; init; }
    public required int[] Size { get; init; }
    public required long[] Stride { get; init; }

    /// <summary>Why the view cannot be read (it reaches past its storage); thrown when it is materialized, where its name is known.</summary>
    public string? Invalid { get; init; }
}
