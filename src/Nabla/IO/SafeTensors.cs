using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace Nabla.IO;

/// <summary>One tensor entry of a safetensors header: name, dtype string, shape and byte range in the data buffer.</summary>
/// <param name="Begin">Offset of the first byte, relative to the start of the data buffer.</param>
/// <param name="End">Offset one past the last byte (exclusive).</param>
public sealed record SafeTensorInfo(string Name, string DTypeName, int[] Shape, long Begin, long End)
{
    /// <summary>The Nabla dtype, or null when the file's dtype has no Nabla equivalent (F8_*, U16, C64, ...).</summary>
    public DType? DType => SafeTensors.ToNablaDType(DTypeName);
}

/// <summary>A parsed and validated safetensors header: the tensor entries in file order and the metadata.</summary>
public sealed record SafeTensorsHeader(IReadOnlyList<SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata, long DataStart);

/// <summary>
/// Reads and writes the safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
/// and one flat little-endian buffer. Reads validate the header as strictly as the reference implementation and
/// throw <see cref="ModelFormatException"/> naming the file, the tensor and the reason. Writes are deterministic
/// (same tensors, same bytes) and atomic (a temp file in the same folder, then a rename).
/// </summary>
public static class SafeTensors
{
    /// <summary>The reference reader's cap on the header length.</summary>
    public const long MaxHeaderLength = 100_000_000;

    const string MetadataKey = "__metadata__";
    const string IndexSuffix = ".index.json";
    const int ChunkBytes = 1 << 24;

    // Element bits of every dtype the format defines; null where Nabla has no matching type.
    static readonly Dictionary<string, (int Bits, DType? DType)> KnownDTypes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = (8, Nabla.DType.Bool),
        ["U8"] = (8, Nabla.DType.UInt8),
        ["I8"] = (8, Nabla.DType.Int8),
        ["I16"] = (16, null),
        ["U16"] = (16, null),
        ["F16"] = (16, Nabla.DType.Float16),
        ["BF16"] = (16, Nabla.DType.BFloat16),
        ["I32"] = (32, Nabla.DType.Int32),
        ["U32"] = (32, null),
        ["F32"] = (32, Nabla.DType.Float32),
        ["F64"] = (64, Nabla.DType.Float64),
        ["C64"] = (64, null),
        ["I64"] = (64, Nabla.DType.Int64),
        ["U64"] = (64, null),
        ["F8_E5M2"] = (8, null),
        ["F8_E4M3"] = (8, null),
        ["F8_E8M0"] = (8, null),
        ["F8_E4M3FNUZ"] = (8, null),
        ["F8_E5M2FNUZ"] = (8, null),
        ["F4"] = (4, null),
        ["F6_E2M3"] = (6, null),
        ["F6_E3M2"] = (6, null),
    };

    /// <summary>The safetensors dtype string of a Nabla dtype (<c>F32</c>, <c>BF16</c>, ...).</summary>
    public static string DTypeName(DType dtype) => dtype switch
    {
        Nabla.DType.Bool => "BOOL",
        Nabla.DType.UInt8 => "U8",
        Nabla.DType.Int8 => "I8",
        Nabla.DType.Int32 => "I32",
        Nabla.DType.Int64 => "I64",
        Nabla.DType.Float16 => "F16",
        Nabla.DType.BFloat16 => "BF16",
        Nabla.DType.Float32 => "F32",
        _ => "F64",
    };

    /// <summary>The Nabla dtype of a safetensors dtype string, or null when Nabla has none.</summary>
    public static DType? ToNablaDType(string name) => KnownDTypes.TryGetValue(name, out var d) ? d.DType : null;

    // ---------------------------------------------------------------- reading

    /// <summary>
    /// Loads every tensor of a safetensors file. <paramref name="path"/> may also be a sharded checkpoint's
    /// <c>*.safetensors.index.json</c>, or a folder holding <c>model.safetensors.index.json</c> or <c>model.safetensors</c>.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path) => LoadWithMetadata(path).Tensors;

    /// <summary>
    /// Like <see cref="Load"/>, also returning the <c>__metadata__</c> block (for a sharded checkpoint, the index's
    /// <c>metadata</c>, with non-string values as their JSON text).
    /// </summary>
    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) LoadWithMetadata(string path)
    {
        path = ResolvePath(path);
        if (path.EndsWith(IndexSuffix, StringComparison.OrdinalIgnoreCase)) return LoadSharded(path);
        using var handle = OpenRead(path);
        var header = ReadHeader(handle, path);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var info in header.Tensors) tensors[info.Name] = ReadTensor(handle, path, header.DataStart, info);
        return (tensors, new Dictionary<string, string>(header.Metadata, StringComparer.Ordinal));
    }

    /// <summary>Parses and validates the header of a safetensors file without reading tensor data.</summary>
    public static SafeTensorsHeader ReadHeader(string path)
    {
        using var handle = OpenRead(path);
        return ReadHeader(handle, path);
    }

    /// <summary>Loads the tensors of a sharded checkpoint from its index (<c>model.safetensors.index.json</c>).</summary>
    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) LoadSharded(string indexPath)
    {
        var (weightMap, metadata) = ReadIndex(indexPath);
        string folder = Path.GetDirectoryName(Path.GetFullPath(indexPath)) ?? ".";
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var group in weightMap.GroupBy(kv => kv.Value, StringComparer.Ordinal))
        {
            string shardPath = Path.Combine(folder, group.Key);
            using var handle = OpenRead(shardPath);
            var header = ReadHeader(handle, shardPath);
            var byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
            foreach (var (name, _) in group)
            {
                if (!byName.TryGetValue(name, out var info))
                    throw Error(indexPath, name, $"the weight_map places it in shard '{group.Key}', which has no such tensor");
                tensors[name] = ReadTensor(handle, shardPath, header.DataStart, info);
            }
        }
        return (tensors, metadata);
    }

    static string ResolvePath(string path)
    {
        if (!Directory.Exists(path)) return path;
        string index = Path.Combine(path, "model.safetensors" + IndexSuffix);
        if (File.Exists(index)) return index;
        string single = Path.Combine(path, "model.safetensors");
        if (File.Exists(single)) return single;
        throw new ModelFormatException($"safetensors: folder '{path}' holds neither model.safetensors nor model.safetensors.index.json");
    }

    static SafeFileHandle OpenRead(string path)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (FileNotFoundException e)
        {
            throw new ModelFormatException($"safetensors: '{path}': file not found", e);
        }
        catch (DirectoryNotFoundException e)
        {
            throw new ModelFormatException($"safetensors: '{path}': folder not found", e);
        }
    }

    static ModelFormatException Error(string path, string? tensor, string reason, Exception? inner = null)
    {
        string where = tensor is null ? $"safetensors: '{path}'" : $"safetensors: '{path}': tensor '{tensor}'";
        return inner is null ? new ModelFormatException($"{where}: {reason}") : new ModelFormatException($"{where}: {reason}", inner);
    }

    static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long fileOffset, string path, string? tensor)
    {
        while (buffer.Length > 0)
        {
            int n = RandomAccess.Read(handle, buffer, fileOffset);
            if (n <= 0) throw Error(path, tensor, $"file ends early at byte {fileOffset}");
            buffer = buffer[n..];
            fileOffset += n;
        }
    }

    static SafeTensorsHeader ReadHeader(SafeFileHandle handle, string path)
    {
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8) throw Error(path, null, $"file is {fileLength} bytes, too short for the 8-byte header length (truncated or not a safetensors file)");
        Span<byte> lenBytes = stackalloc byte[8];
        ReadExactly(handle, lenBytes, 0, path, null);
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLength > MaxHeaderLength)
            throw Error(path, null, $"header length {headerLength} exceeds the limit of {MaxHeaderLength} bytes (corrupt or not a safetensors file)");
        if (8 + (long)headerLength > fileLength)
            throw Error(path, null, $"header length {headerLength} runs past the end of the file ({fileLength} bytes; truncated?)");
        var headerBytes = new byte[headerLength];
        ReadExactly(handle, headerBytes, 8, path, null);
        long dataStart = 8 + (long)headerLength;
        return ParseHeader(headerBytes, fileLength - dataStart, path, dataStart);
    }

    static SafeTensorsHeader ParseHeader(byte[] headerBytes, long bufferLength, string path, long dataStart)
    {
        if (headerBytes.Length == 0 || headerBytes[0] != (byte)'{')
            throw Error(path, null, "header does not start with '{' (not a safetensors file)");
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes)) throw Error(path, null, "header is not valid UTF-8");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw Error(path, null, $"header is not valid JSON: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw Error(path, null, $"header is not valid UTF-8 JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Error(path, null, "header is not a JSON object");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var infos = new List<SafeTensorInfo>();
            foreach (var prop in root.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw Error(path, prop.Name, "appears twice in the header");
                if (prop.Name == MetadataKey) ReadMetadata(prop.Value, metadata, path);
                else infos.Add(ParseEntry(prop.Name, prop.Value, bufferLength, path));
            }
            CheckLayout(infos, bufferLength, path);
            return new SafeTensorsHeader(infos, metadata, dataStart);
        }
    }

    static void ReadMetadata(JsonElement value, Dictionary<string, string> metadata, string path)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object) throw Error(path, null, "__metadata__ is not a JSON object of strings");
        foreach (var p in value.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw Error(path, null, $"__metadata__ value of '{p.Name}' is {p.Value.ValueKind}, expected a string");
            if (!metadata.TryAdd(p.Name, p.Value.GetString()!)) throw Error(path, null, $"__metadata__ key '{p.Name}' appears twice");
        }
    }

    static SafeTensorInfo ParseEntry(string name, JsonElement e, long bufferLength, string path)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Error(path, name, $"header entry is {e.ValueKind}, expected an object");
        string? dtype = null;
        JsonElement? shapeEl = null, offsetsEl = null;
        foreach (var p in e.EnumerateObject())
        {
            switch (p.Name)
            {
                case "dtype":
                    if (p.Value.ValueKind != JsonValueKind.String) throw Error(path, name, "dtype is not a string");
                    dtype = p.Value.GetString()!;
                    break;
                case "shape": shapeEl = p.Value; break;
                case "data_offsets": offsetsEl = p.Value; break;
                default: throw Error(path, name, $"unexpected field '{p.Name}' in the header entry");
            }
        }
        if (dtype is null) throw Error(path, name, "header entry has no dtype");
        if (shapeEl is null) throw Error(path, name, "header entry has no shape");
        if (offsetsEl is null) throw Error(path, name, "header entry has no data_offsets");
        if (!KnownDTypes.TryGetValue(dtype, out var dt)) throw Error(path, name, $"unknown dtype '{dtype}'");

        var s = shapeEl.Value;
        if (s.ValueKind != JsonValueKind.Array) throw Error(path, name, "shape is not an array");
        var shape = new int[s.GetArrayLength()];
        int i = 0;
        long numel = 1;
        foreach (var d in s.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int v) || v < 0)
                throw Error(path, name, $"shape entry {i} ({d.GetRawText()}) is not a non-negative 32-bit integer");
            shape[i++] = v;
            numel = numel == 0 || v == 0 ? 0 : numel > long.MaxValue / 64 / v ? -1 : numel * v;
            if (numel < 0) throw Error(path, name, $"shape [{string.Join(", ", shape.Take(i))}...] overflows the element count");
        }
        if (numel > int.MaxValue) throw Error(path, name, $"shape {ShapeUtil.Format(shape)} has {numel} elements; Nabla tensors hold at most 2^31-1");

        var o = offsetsEl.Value;
        if (o.ValueKind != JsonValueKind.Array || o.GetArrayLength() != 2)
            throw Error(path, name, "data_offsets is not an array of two integers");
        if (!o[0].TryGetInt64(out long begin) || !o[1].TryGetInt64(out long end) || begin < 0 || end < 0)
            throw Error(path, name, $"data_offsets {o.GetRawText()} are not non-negative integers");
        if (end < begin) throw Error(path, name, $"data_offsets [{begin}, {end}] end before they begin");
        if (end > bufferLength)
            throw Error(path, name, $"data_offsets [{begin}, {end}] run past the end of the data buffer ({bufferLength} bytes; truncated?)");
        long bits = numel * dt.Bits;
        if (bits % 8 != 0) throw Error(path, name, $"{numel} elements of {dtype} are not a whole number of bytes");
        if (bits / 8 != end - begin)
            throw Error(path, name, $"shape {ShapeUtil.Format(shape)} of {dtype} needs {bits / 8} bytes but data_offsets [{begin}, {end}] hold {end - begin}");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    // The reference rule: sorted by begin, the tensors tile the buffer exactly (no holes, no overlap, no tail).
    static void CheckLayout(List<SafeTensorInfo> infos, long bufferLength, string path)
    {
        var sorted = infos.OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
        long expected = 0;
        string? previous = null;
        foreach (var t in sorted)
        {
            if (t.Begin < expected)
                throw Error(path, t.Name, $"data_offsets [{t.Begin}, {t.End}] overlap tensor '{previous}', which ends at {expected}");
            if (t.Begin > expected)
                throw Error(path, t.Name, $"data_offsets [{t.Begin}, {t.End}] leave a hole: the previous tensor ends at {expected}");
            expected = t.End;
            previous = t.Name;
        }
        if (expected != bufferLength)
            throw Error(path, null, $"the tensors cover {expected} bytes but the data buffer has {bufferLength} (trailing bytes)");
    }

    static Tensor ReadTensor(SafeFileHandle handle, string path, long dataStart, SafeTensorInfo info)
    {
        var dtype = info.DType ?? throw Error(path, info.Name, $"dtype {info.DTypeName} is not supported by Nabla");
        int n = ShapeUtil.Numel(info.Shape);
        var storage = Storage.Allocate(dtype, n);
        int size = dtype.ElementSize();
        int perChunk = Math.Max(1, ChunkBytes / size);
        long fileOffset = dataStart + info.Begin;
        for (int start = 0; start < n; start += perChunk)
        {
            int count = Math.Min(perChunk, n - start);
            ReadExactly(handle, Tensor.ElementBytes(storage, start, count), fileOffset, path, info.Name);
            Tensor.FixupAfterRead(storage, start, count);
            fileOffset += (long)count * size;
        }
        return new Tensor(storage, (int[])info.Shape.Clone());
    }

    static (Dictionary<string, string> WeightMap, Dictionary<string, string> Metadata) ReadIndex(string indexPath)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(indexPath);
        }
        catch (FileNotFoundException e)
        {
            throw new ModelFormatException($"safetensors: '{indexPath}': file not found", e);
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw Error(indexPath, null, $"index is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw Error(indexPath, null, "index has no weight_map object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("metadata", out var md) && md.ValueKind == JsonValueKind.Object)
                foreach (var p in md.EnumerateObject())
                    metadata[p.Name] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw Error(indexPath, p.Name, "weight_map value is not a file name");
                string shard = p.Value.GetString()!;
                CheckShardName(indexPath, p.Name, shard);
                if (!weightMap.TryAdd(p.Name, shard)) throw Error(indexPath, p.Name, "appears twice in the weight_map");
            }
            return (weightMap, metadata);
        }
    }

    // A shard must be a plain file name next to the index: never a path that escapes the folder.
    static void CheckShardName(string indexPath, string tensor, string shard)
    {
        bool bad = shard.Length == 0 || shard.Contains('/') || shard.Contains('\\') || shard.Contains(':')
            || shard.Contains('\0') || shard == "." || shard == ".." || Path.IsPathRooted(shard)
            || !shard.EndsWith(".safetensors", StringComparison.Ordinal);
        if (bad) throw Error(indexPath, tensor, $"shard name '{shard}' is not a plain *.safetensors file name in the index's folder");
    }

    // ---------------------------------------------------------------- writing

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> in safetensors format. The output is
    /// deterministic: tensors ordered as the reference writer does (wider dtypes first, then by name), metadata
    /// keys sorted, header padded with spaces to a multiple of 8. The file is written to a temp file in the same
    /// folder and renamed over <paramref name="path"/>, so a crash never leaves a damaged file behind.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var (header, ordered) = BuildHeader(tensors, metadata);
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full) ?? ".";
        string temp = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                WriteTo(fs, header, ordered);
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>The bytes of a safetensors file holding <paramref name="tensors"/> (the same bytes <see cref="Save"/> writes).</summary>
    public static byte[] Serialize(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var (header, ordered) = BuildHeader(tensors, metadata);
        using var ms = new MemoryStream();
        WriteTo(ms, header, ordered);
        return ms.ToArray();
    }

    static void WriteTo(Stream stream, byte[] header, List<(string Name, Tensor Tensor)> ordered)
    {
        Span<byte> len = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        stream.Write(len);
        stream.Write(header);
        foreach (var (_, t) in ordered)
        {
            var c = t.ContiguousForBytes();
            int n = c.NumElements, size = c.DType.ElementSize();
            int perChunk = Math.Max(1, ChunkBytes / size);
            byte[]? swap = BitConverter.IsLittleEndian ? null : new byte[Math.Min(perChunk, Math.Max(n, 1)) * size];
            for (int start = 0; start < n; start += perChunk)
            {
                int count = Math.Min(perChunk, n - start);
                var bytes = Tensor.ElementBytes(c.Storage, c.Offset + start, count);
                if (swap is not null)
                {
                    var s = swap.AsSpan(0, bytes.Length);
                    bytes.CopyTo(s);
                    Tensor.SwapElements(s, size);
                    stream.Write(s);
                }
                else stream.Write(bytes);
            }
        }
    }

    // Rank of each dtype in the reference writer's ordering (its Dtype enum order); larger goes first.
    static int WriteRank(DType d) => d switch
    {
        Nabla.DType.Bool => 0,
        Nabla.DType.UInt8 => 4,
        Nabla.DType.Int8 => 5,
        Nabla.DType.Float16 => 11,
        Nabla.DType.BFloat16 => 12,
        Nabla.DType.Int32 => 13,
        Nabla.DType.Float32 => 15,
        Nabla.DType.Float64 => 17,
        _ => 18, // Int64
    };

    static (byte[] Header, List<(string Name, Tensor Tensor)> Ordered) BuildHeader(
        IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        foreach (var (name, t) in tensors)
        {
            if (name == MetadataKey) throw new ArgumentException($"safetensors: '{MetadataKey}' is reserved and cannot name a tensor", nameof(tensors));
            ArgumentNullException.ThrowIfNull(t, $"tensors[\"{name}\"]");
        }
        var ordered = tensors
            .Select(kv => (Name: kv.Key, Tensor: kv.Value, Key: Encoding.UTF8.GetBytes(kv.Key)))
            .OrderByDescending(x => WriteRank(x.Tensor.DType))
            .ThenBy(x => x.Key, Utf8Order.Instance)
            .ToList();

        var sb = new StringBuilder("{");
        bool first = true;
        if (metadata is { Count: > 0 })
        {
            sb.Append('"').Append(MetadataKey).Append("\":{");
            bool firstMd = true;
            foreach (var (k, v) in metadata.OrderBy(kv => Encoding.UTF8.GetBytes(kv.Key), Utf8Order.Instance))
            {
                if (!firstMd) sb.Append(',');
                firstMd = false;
                AppendJsonString(sb, k);
                sb.Append(':');
                AppendJsonString(sb, v ?? throw new ArgumentException($"safetensors: metadata value of '{k}' is null", nameof(metadata)));
            }
            sb.Append('}');
            first = false;
        }
        long offset = 0;
        foreach (var (name, t, _) in ordered)
        {
            long bytes = (long)t.NumElements * t.DType.ElementSize();
            if (!first) sb.Append(',');
            first = false;
            AppendJsonString(sb, name);
            sb.Append(":{\"dtype\":\"").Append(DTypeName(t.DType)).Append("\",\"shape\":[");
            var shape = t.Shape;
            for (int i = 0; i < shape.Length; i++)
            {
                if (i > 0) sb.Append(',');
                sb.Append(shape[i].ToString(CultureInfo.InvariantCulture));
            }
            sb.Append("],\"data_offsets\":[").Append(offset.ToString(CultureInfo.InvariantCulture)).Append(',')
              .Append((offset + bytes).ToString(CultureInfo.InvariantCulture)).Append("]}");
            offset += bytes;
        }
        sb.Append('}');
        int utf8Length = Encoding.UTF8.GetByteCount(sb.ToString());
        sb.Append(' ', (8 - utf8Length % 8) % 8);
        return (Encoding.UTF8.GetBytes(sb.ToString()), ordered.Select(x => (x.Name, x.Tensor)).ToList());
    }

    // JSON string escaping as serde_json writes it: quote, backslash and control characters; everything else raw UTF-8.
    static void AppendJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    sealed class Utf8Order : IComparer<byte[]>
    {
        public static readonly Utf8Order Instance = new();
        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}
