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
    /// <summary>The Nabla dtype, or null when the file's dtype has no Nabla equivalent (F8_*, C64, ...).</summary>
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
        ["I16"] = (16, Nabla.DType.Int16),
        ["U16"] = (16, Nabla.DType.UInt16),
        ["F16"] = (16, Nabla.DType.Float16),
        ["BF16"] = (16, Nabla.DType.BFloat16),
        ["I32"] = (32, Nabla.DType.Int32),
        ["U32"] = (32, Nabla.DType.UInt32),
        ["F32"] = (32, Nabla.DType.Float32),
        ["F64"] = (64, Nabla.DType.Float64),
        ["C64"] = (64, null),
        ["I64"] = (64, Nabla.DType.Int64),
        ["U64"] = (64, Nabla.DType.UInt64),
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
        Nabla.DType.Float64 => "F64",
        Nabla.DType.Int16 => "I16",
        Nabla.DType.UInt16 => "U16",
        Nabla.DType.UInt32 => "U32",
        Nabla.DType.UInt64 => "U64",
        _ => throw DTypes.Unknown(dtype),
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
        using var file = SafeTensorsFile.Open(path);
        return (file.LoadAll(), new Dictionary<string, string>(file.Metadata, StringComparer.Ordinal));
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
            using var file = SafeTensorsFile.Open(shardPath);
            foreach (var (name, _) in group)
            {
                if (!file.Contains(name))
                    throw Error(indexPath, name, $"the weight_map places it in shard '{group.Key}', which has no such tensor");
                tensors[name] = file.LoadTensor(name);
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

    internal static SafeFileHandle OpenRead(string path)
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

    internal static SafeTensorsHeader ReadHeader(SafeFileHandle handle, string path)
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
        AtomicFile.Write(path, fs => WriteTo(fs, header, ordered), flushToDisk: true);
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> as a sharded checkpoint in <paramref name="folder"/>, as Hugging Face's
    /// <c>save_pretrained</c> lays it out: <c>{prefix}-00001-of-0000N.safetensors</c> files and
    /// <c>{prefix}.safetensors.index.json</c> (<c>metadata.total_size</c> and a sorted <c>weight_map</c>). Tensors are
    /// taken in name order (UTF-8 byte order) and a shard is closed when the next tensor would take it past
    /// <paramref name="maxShardBytes"/>; a tensor larger than that gets a shard of its own. When everything fits in
    /// one shard, a single <c>{prefix}.safetensors</c> is written and no index, as save_pretrained does. The same
    /// tensors always give the same bytes. <paramref name="metadata"/> goes into every shard's <c>__metadata__</c>
    /// and the index's <c>metadata</c>. Returns the paths written (shards in order, then the index).
    /// </summary>
    public static IReadOnlyList<string> SaveSharded(string folder, IReadOnlyDictionary<string, Tensor> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null, string prefix = "model")
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(prefix);
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), maxShardBytes, "safetensors: the maximum shard size must be positive");
        if (prefix.Length == 0 || prefix.IndexOfAny(['/', '\\', ':', '\0']) >= 0)
            throw new ArgumentException($"safetensors: shard prefix '{prefix}' must be a plain file name", nameof(prefix));
        if (metadata is not null && metadata.ContainsKey("total_size"))
            throw new ArgumentException("safetensors: metadata key 'total_size' is reserved for the index", nameof(metadata));

        var shards = new List<List<string>>();
        long current = 0, total = 0;
        foreach (var name in tensors.Keys.OrderBy(k => Encoding.UTF8.GetBytes(k), Utf8Order.Instance))
        {
            var t = tensors[name] ?? throw new ArgumentNullException(nameof(tensors), $"tensors[\"{name}\"] is null");
            long bytes = (long)t.NumElements * t.DType.ElementSize();
            if (shards.Count == 0 || (current > 0 && current + bytes > maxShardBytes))
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(name);
            current += bytes;
            total += bytes;
        }
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        if (shards.Count <= 1)
        {
            string single = Path.Combine(folder, prefix + ".safetensors");
            Save(single, tensors, metadata);
            written.Add(single);
            return written;
        }
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string file = string.Create(CultureInfo.InvariantCulture, $"{prefix}-{i + 1:D5}-of-{shards.Count:D5}.safetensors");
            var part = shards[i].ToDictionary(n => n, n => tensors[n], StringComparer.Ordinal);
            string shardPath = Path.Combine(folder, file);
            Save(shardPath, part, metadata);
            written.Add(shardPath);
            foreach (var n in shards[i]) weightMap[n] = file;
        }
        string indexPath = Path.Combine(folder, prefix + ".safetensors" + IndexSuffix);
        WriteIndex(indexPath, weightMap, total, metadata);
        written.Add(indexPath);
        return written;
    }

    // json.dumps(index, indent=2, sort_keys=True) + "\n", as transformers writes it; non-ASCII escaped as \uXXXX.
    static void WriteIndex(string indexPath, SortedDictionary<string, string> weightMap, long totalSize, IReadOnlyDictionary<string, string>? metadata)
    {
        var md = new List<(string Key, string Json)> { ("total_size", totalSize.ToString(CultureInfo.InvariantCulture)) };
        if (metadata is not null)
            foreach (var (k, v) in metadata) md.Add((k, AsciiJson(v ?? throw new ArgumentException($"safetensors: metadata value of '{k}' is null", nameof(metadata)))));
        md.Sort((a, b) => Utf8Order.Instance.Compare(Encoding.UTF8.GetBytes(a.Key), Encoding.UTF8.GetBytes(b.Key)));
        var sb = new StringBuilder("{\n  \"metadata\": {\n");
        for (int i = 0; i < md.Count; i++)
            sb.Append("    ").Append(AsciiJson(md[i].Key)).Append(": ").Append(md[i].Json).Append(i + 1 < md.Count ? ",\n" : "\n");
        sb.Append("  },\n  \"weight_map\": {\n");
        var entries = weightMap.OrderBy(kv => Encoding.UTF8.GetBytes(kv.Key), Utf8Order.Instance).ToList();
        for (int i = 0; i < entries.Count; i++)
            sb.Append("    ").Append(AsciiJson(entries[i].Key)).Append(": ").Append(AsciiJson(entries[i].Value)).Append(i + 1 < entries.Count ? ",\n" : "\n");
        sb.Append("  }\n}\n");
        AtomicFile.WriteAllBytes(indexPath, Encoding.UTF8.GetBytes(sb.ToString()));
    }

    static string AsciiJson(string s)
    {
        var sb = new StringBuilder();
        AppendJsonString(sb, s);
        var result = new StringBuilder(sb.Length);
        foreach (char c in sb.ToString())
        {
            if (c < 0x80) result.Append(c);
            else result.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
        }
        return result.ToString();
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
            var (st, off, temp) = t.ContiguousElements();
            int n = t.NumElements, size = t.DType.ElementSize();
            int perChunk = Math.Max(1, ChunkBytes / size);
            byte[]? swap = BitConverter.IsLittleEndian ? null : new byte[Math.Min(perChunk, Math.Max(n, 1)) * size];
            for (int start = 0; start < n; start += perChunk)
            {
                int count = Math.Min(perChunk, n - start);
                var bytes = Tensor.ElementBytes(st, off + start, count);
                if (swap is not null)
                {
                    var s = swap.AsSpan(0, bytes.Length);
                    bytes.CopyTo(s);
                    Tensor.SwapElements(s, size);
                    stream.Write(s);
                }
                else stream.Write(bytes);
            }
            temp?.Dispose();
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
        Nabla.DType.Int64 => 18,
        Nabla.DType.Int16 => 9,
        Nabla.DType.UInt16 => 10,
        Nabla.DType.UInt32 => 14,
        Nabla.DType.UInt64 => 19,
        _ => throw DTypes.Unknown(d),
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
