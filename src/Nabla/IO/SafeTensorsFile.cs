using System.Buffers;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Nabla.IO;

/// <summary>
/// A safetensors file opened memory-mapped. <see cref="Open"/> reads and validates the header and checks every
/// tensor's byte range against the file's length before any tensor byte is touched; after that a tensor is
/// available two ways:
/// <list type="bullet">
/// <item><see cref="GetBytes"/>, <see cref="GetMemory"/>, <see cref="GetElements{T}"/>: read-only views of the mapped
/// bytes, no copy (for converters, inspectors, quantizers, hashing). They are valid until <see cref="Dispose"/>.</item>
/// <item><see cref="LoadTensor"/>: a Nabla <see cref="Tensor"/>, copied once, directly from the mapping into the
/// tensor's own storage. A Tensor cannot alias the mapping because its <see cref="Storage"/> is a managed array.</item>
/// </list>
/// Not thread-safe against <see cref="Dispose"/>: a view obtained before disposal must not be used after it.
/// If another process truncates the file while it is mapped, touching the lost pages faults (SIGBUS on Linux):
/// that is inherent to memory mapping; <see cref="SafeTensors.Load"/> callers that cannot rule it out can copy the
/// file first.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    // Materialization maps at most this many bytes at a time, so the process's resident set holds at most one
    // window of the file next to the tensors being built.
    const long CopyWindowBytes = 64L << 20;

    readonly SafeFileHandle handle;
    readonly MemoryMappedFile? map;
    readonly Dictionary<string, SafeTensorInfo> byName;
    readonly Lock gate = new();
    MemoryMappedViewAccessor? whole;
    byte* wholePointer;
    bool disposed;

    SafeTensorsFile(string path, SafeFileHandle handle, SafeTensorsHeader header, long fileLength)
    {
        Path = path;
        this.handle = handle;
        Header = header;
        FileLength = fileLength;
        byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        // A file holding only a header still maps (it is at least 8 bytes long).
        map = MemoryMappedFile.CreateFromFile(handle, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
    }

    /// <summary>Opens and validates <paramref name="path"/>; throws <see cref="ModelFormatException"/> naming the file, the tensor and the reason.</summary>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var handle = SafeTensors.OpenRead(path);
        try
        {
            long length = RandomAccess.GetLength(handle);
            var header = SafeTensors.ReadHeader(handle, path);
            try
            {
                return new SafeTensorsFile(path, handle, header, length);
            }
            catch (IOException e)
            {
                throw new ModelFormatException($"safetensors: '{path}': cannot map the file: {e.Message}", e);
            }
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The path the file was opened with.</summary>
    public string Path { get; }

    /// <summary>The file's length in bytes when it was opened.</summary>
    public long FileLength { get; }

    /// <summary>The validated header: tensor entries in file order, metadata, and where the data buffer starts.</summary>
    public SafeTensorsHeader Header { get; }

    /// <summary>The tensor entries in file order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors => Header.Tensors;

    /// <summary>The <c>__metadata__</c> block (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata => Header.Metadata;

    public bool Contains(string name) => byName.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">the file has no such tensor (the message names the file and the tensor)</exception>
    public SafeTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return byName.TryGetValue(name, out var info) ? info
            : throw new KeyNotFoundException($"safetensors: '{Path}' has no tensor '{name}'");
    }

    /// <summary>The tensor's bytes as stored (little-endian, row-major), read-only and not copied.</summary>
    /// <exception cref="NotSupportedException">the tensor holds 2 GiB or more, more than a span can address</exception>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        var info = GetInfo(name);
        return new ReadOnlySpan<byte>(PointerTo(info), SpanLength(info));
    }

    /// <summary>
    /// The tensor's bytes as a <see cref="ReadOnlyMemory{T}"/> over the mapping (it can be stored in fields and passed
    /// to async code); reading it after <see cref="Dispose"/> throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    public ReadOnlyMemory<byte> GetMemory(string name)
    {
        var info = GetInfo(name);
        return new MappedMemory(this, PointerTo(info), SpanLength(info)).Memory;
    }

    /// <summary>
    /// The tensor's elements, read-only and not copied. <typeparamref name="T"/> must match the stored dtype:
    /// float (F32), double (F64), <see cref="Half"/> (F16), <see cref="BFloat16"/> (BF16), long (I64), int (I32),
    /// short (I16), sbyte (I8), byte (U8 or BOOL), bool (BOOL, checked to hold only 0 and 1), ushort/uint/ulong
    /// (U16/U32/U64). Multi-byte elements need a little-endian machine.
    /// </summary>
    public ReadOnlySpan<T> GetElements<T>(string name) where T : unmanaged
    {
        var info = GetInfo(name);
        string[] accepted = AcceptedDTypes(typeof(T));
        if (!accepted.Contains(info.DTypeName))
            throw new DTypeException($"safetensors: '{Path}': tensor '{name}' is {info.DTypeName}; {typeof(T).Name} reads {string.Join(" or ", accepted)}");
        if (sizeof(T) > 1 && !BitConverter.IsLittleEndian)
            throw new NotSupportedException($"safetensors: '{Path}': tensor '{name}': a zero-copy view of {info.DTypeName} needs a little-endian machine; use LoadTensor");
        var bytes = GetBytes(name);
        if (typeof(T) == typeof(bool) && bytes.IndexOfAnyExcept((byte)0, (byte)1) is int bad and >= 0)
            throw new ModelFormatException($"safetensors: '{Path}': tensor '{name}': BOOL element {bad} holds {bytes[bad]}, not 0 or 1; read it as byte");
        return MemoryMarshal.Cast<byte, T>(bytes);
    }

    static string[] AcceptedDTypes(Type t) =>
        t == typeof(float) ? ["F32"] :
        t == typeof(double) ? ["F64"] :
        t == typeof(Half) ? ["F16"] :
        t == typeof(BFloat16) ? ["BF16"] :
        t == typeof(long) ? ["I64"] :
        t == typeof(int) ? ["I32"] :
        t == typeof(short) ? ["I16"] :
        t == typeof(sbyte) ? ["I8"] :
        t == typeof(byte) ? ["U8", "BOOL"] :
        t == typeof(bool) ? ["BOOL"] :
        t == typeof(ushort) ? ["U16"] :
        t == typeof(uint) ? ["U32"] :
        t == typeof(ulong) ? ["U64"] :
        throw new ArgumentException($"safetensors: {t.Name} is not an element type of the format", nameof(t));

    /// <summary>
    /// A new contiguous tensor with the named tensor's values: one copy, from the mapped file straight into the
    /// tensor's storage (no intermediate buffer). The file is mapped one window at a time, so loading a whole
    /// checkpoint keeps at most one window of it resident beside the tensors.
    /// </summary>
    public Tensor LoadTensor(string name)
    {
        var info = GetInfo(name);
        ObjectDisposedException.ThrowIf(disposed, this);
        var dtype = info.DType ?? throw new ModelFormatException($"safetensors: '{Path}': tensor '{name}': dtype {info.DTypeName} is not supported by Nabla");
        int n = ShapeUtil.Numel(info.Shape);
        var storage = Storage.Allocate(dtype, n, uninitialized: true);
        int size = dtype.ElementSize();
        int perWindow = (int)Math.Max(1, CopyWindowBytes / size);
        long fileOffset = Header.DataStart + info.Begin;
        for (int start = 0; start < n; start += perWindow)
        {
            int count = Math.Min(perWindow, n - start);
            long bytes = (long)count * size;
            using (var view = map!.CreateViewAccessor(fileOffset, bytes, MemoryMappedFileAccess.Read))
            {
                var h = view.SafeMemoryMappedViewHandle;
                byte* p = null;
                h.AcquirePointer(ref p);
                try
                {
                    new ReadOnlySpan<byte>(p + view.PointerOffset, (int)bytes).CopyTo(Tensor.ElementBytes(storage, start, count));
                }
                finally
                {
                    h.ReleasePointer();
                }
            }
            Tensor.FixupAfterRead(storage, start, count);
            fileOffset += bytes;
        }
        return new Tensor(storage, (int[])info.Shape.Clone());
    }

    /// <summary>Every tensor of the file, materialized with <see cref="LoadTensor"/>, in file order.</summary>
    public Dictionary<string, Tensor> LoadAll()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var info in Header.Tensors) result[info.Name] = LoadTensor(info.Name);
        return result;
    }

    int SpanLength(SafeTensorInfo info)
    {
        long length = info.End - info.Begin;
        if (length > int.MaxValue)
            throw new NotSupportedException($"safetensors: '{Path}': tensor '{info.Name}' holds {length} bytes; a span addresses at most {int.MaxValue}; use LoadTensor");
        return (int)length;
    }

    byte* PointerTo(SafeTensorInfo info)
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (whole is null)
            {
                var view = map!.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
                byte* p = null;
                view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                wholePointer = p + view.PointerOffset;
                whole = view;
            }
        }
        // The header check guarantees DataStart + End <= FileLength, the length of the mapping.
        return wholePointer + Header.DataStart + info.Begin;
    }

    public void Dispose()
    {
        lock (gate)
        {
            if (disposed) return;
            disposed = true;
        }
        if (whole is not null)
        {
            whole.SafeMemoryMappedViewHandle.ReleasePointer();
            whole.Dispose();
            wholePointer = null;
        }
        map?.Dispose();
        handle.Dispose();
    }

    internal bool IsDisposed => disposed;

    /// <summary>A <see cref="MemoryManager{T}"/> over mapped bytes that refuses access once its file is disposed.</summary>
    sealed class MappedMemory(SafeTensorsFile owner, byte* pointer, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan()
        {
            ObjectDisposedException.ThrowIf(owner.IsDisposed, owner);
            return new Span<byte>(pointer, length);
        }

        public override MemoryHandle Pin(int elementIndex = 0)
        {
            ObjectDisposedException.ThrowIf(owner.IsDisposed, owner);
            if ((uint)elementIndex > (uint)length) throw new ArgumentOutOfRangeException(nameof(elementIndex));
            return new MemoryHandle(pointer + elementIndex);
        }

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }
}
