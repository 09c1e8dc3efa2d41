using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Nabla.Interop;

/// <summary>
/// Reads and writes PyTorch checkpoints (<c>torch.save</c>): the zip format of PyTorch 1.6 and later and the legacy
/// pickle stream before it. Loading never executes code: only the globals that describe tensors and containers are
/// accepted (as <c>torch.load(weights_only=True)</c> does), and every other one is refused by name.
/// </summary>
public static partial class PyTorchCheckpoint
{
    const int MaxDepth = 1000;
    static readonly BigInteger LegacyMagic = BigInteger.Parse("1950a86a20f9469cfc6c", System.Globalization.NumberStyles.HexNumber);

    /// <summary>
    /// The object <c>torch.save</c> stored: <see cref="PyDict"/>, <see cref="PyList"/>, <see cref="PyTuple"/>,
    /// <see cref="PySet"/>, string, long, <see cref="BigInteger"/>, double, bool, null, byte[], <see cref="TorchDevice"/>
    /// and <see cref="Tensor"/> (materialized, contiguous, on the CPU).
    /// </summary>
    /// <exception cref="ModelFormatException">The file is not a readable checkpoint, or it names a global that is not allowed.</exception>
    public static object? Load(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: file not found");
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            return LoadStream(fs, path, nesting: 0);
        }
        catch (ModelFormatException) { throw; }
        catch (Exception e) when (e is IOException or InvalidDataException or EndOfStreamException or OverflowException or OutOfMemoryException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ModelFormatException($"{path}: cannot read the checkpoint: {e.Message}", e);
        }
    }

    /// <summary>
    /// The tensors of a state dict, with their dotted names as stored. Without <paramref name="key"/> the dictionary
    /// is the top-level object when that maps names to tensors, or else the first such dictionary under a usual key
    /// (<c>state_dict</c>, <c>model_state_dict</c>, <c>model</c>, <c>module</c>, ...) or anywhere below.
    /// With <paramref name="key"/> it is the top-level entry of that name (dots allowed to go deeper: "a/b" is not).
    /// </summary>
    public static Dictionary<string, Tensor> LoadStateDict(string path, string? key = null)
    {
        var root = Load(path);
        if (key is not null)
        {
            if (root is not PyDict top) throw new ModelFormatException($"{path}: the checkpoint holds a {PyRepr.TypeName(root)}, not a dict with key '{key}'");
            if (!top.TryGetValue(key, out var sub)) throw new ModelFormatException($"{path}: no key '{key}'; top-level keys: {KeyList(top)}");
            if (sub is not PyDict sd) throw new ModelFormatException($"{path}: '{key}' holds a {PyRepr.TypeName(sub)}, not a dict of tensors");
            return ToTensorDict(sd, path, key);
        }
        var found = FindTensorDict(root, 0);
        if (found is null)
        {
            var what = root is PyDict d ? $"top-level keys: {KeyList(d)}" : $"the checkpoint holds a {PyRepr.TypeName(root)}";
            throw new ModelFormatException($"{path}: no dictionary of tensors found; {what}");
        }
        return ToTensorDict(found, path, null);
    }

    static readonly string[] UsualKeys = ["state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params", "ema"];

    static bool IsTensorDict(PyDict d) => d.Count > 0 && d.All(kv => kv.Key is string && kv.Value is Tensor);

    static PyDict? FindTensorDict(object? node, int depth)
    {
        if (node is not PyDict d || depth > 16) return null;
        if (IsTensorDict(d)) return d;
        foreach (var k in UsualKeys)
            if (d.TryGetValue(k, out var v) && v is PyDict sub && IsTensorDict(sub)) return sub;
        // NOTE: descend only through string keys, so an optimizer's per-parameter state (int keys) is not taken for weights.
        foreach (var (k, v) in d)
            if (k is string && FindTensorDict(v, depth + 1) is PyDict f) return f;
        return null;
    }

    static Dictionary<string, Tensor> ToTensorDict(PyDict d, string path, string? key)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, v) in d)
        {
            if (k is not string name) throw new ModelFormatException($"{path}: {(key is null ? "state dict" : $"'{key}'")} has a non-string key {PyRepr.Of(k)}");
            if (v is Tensor t) result[name] = t;
            else if (v is not null) throw new ModelFormatException($"{path}: entry '{name}' is a {PyRepr.TypeName(v)}, not a tensor");
        }
        return result;
    }

    static string KeyList(PyDict d) => d.Count == 0 ? "(none)" : string.Join(", ", d.Keys.Take(20).Select(PyRepr.Of)) + (d.Count > 20 ? ", ..." : "");

    static object? LoadStream(Stream s, string file, int nesting)
    {
        Span<byte> head = stackalloc byte[4];
        int n = s.ReadAtLeast(head, 4, throwOnEndOfStream: false);
        s.Position = 0;
        if (n == 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && head[2] is 3 or 5 or 7)
            return LoadZip(s, file);
        if (n >= 2 && head[0] == 0x80)
            return LoadLegacy(s, file, nesting);
        if (s.Length > 262)
        {
            var tar = new byte[5];
            s.Position = 257;
            s.ReadExactly(tar);
            if (tar.AsSpan().SequenceEqual("ustar"u8))
                throw new ModelFormatException($"{file}: the tar-based checkpoint format of PyTorch 0.1 is not supported");
        }
        throw new ModelFormatException($"{file}: not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)");
    }

    // ---------------------------------------------------------------- zip format

    static object? LoadZip(Stream s, string file)
    {
        using var zip = new ZipArchive(s, ZipArchiveMode.Read, leaveOpen: true);
        var entries = new Dictionary<string, ZipArchiveEntry>(StringComparer.Ordinal);
        foreach (var e in zip.Entries) entries.TryAdd(e.FullName, e);
        string? root = null;
        foreach (var name in entries.Keys)
        {
            if (name == "data.pkl") { root = ""; break; }
            int slash = name.IndexOf('/');
            if (slash > 0 && name.AsSpan(slash + 1).SequenceEqual("data.pkl")) { root = name[..(slash + 1)]; break; }
        }
        bool torchScript = entries.Keys.Any(k => k.EndsWith("constants.pkl", StringComparison.Ordinal) || k.Contains("/code/", StringComparison.Ordinal) || k.StartsWith("code/", StringComparison.Ordinal));
        if (torchScript)
            throw new ModelFormatException($"{file}: this is a TorchScript archive (torch.jit.save); TorchScript is not supported, only torch.save checkpoints");
        if (root is null) throw new ModelFormatException($"{file}: zip archive has no data.pkl record; not a torch.save checkpoint");

        bool bigEndian = false;
        if (entries.TryGetValue(root + "byteorder", out var bo))
        {
            var text = System.Text.Encoding.ASCII.GetString(ReadEntry(bo, file, 16, s.Length)).Trim();
            bigEndian = text switch
            {
                "little" => false,
                "big" => true,
                _ => throw new ModelFormatException($"{file}: byteorder record says '{text}', expected 'little' or 'big'"),
            };
        }

        long archiveLength = s.Length;
        var storages = new Dictionary<string, StorageRef>(StringComparer.Ordinal);
        object? PersistentLoad(PyTuple pid)
        {
            if (pid.Count != 5 || pid[0] is not "storage")
                throw new ModelFormatException($"{file}: unsupported persistent id {PyRepr.Of(pid)} (expected ('storage', class, key, location, numel))");
            var (cls, key, numel) = StorageArgs(pid, file);
            if (storages.TryGetValue(key, out var existing)) return existing;
            if (!entries.TryGetValue(root + "data/" + key, out var rec))
                throw new ModelFormatException($"{file}: storage '{key}' has no record {root}data/{key}");
            var sref = NewStorage(cls, key, numel);
            if (rec.Length < sref.ByteLength)
                throw new ModelFormatException($"{file}: record {root}data/{key} holds {rec.Length} bytes, but storage '{key}' needs {sref.ByteLength} ({numel} × {sref.ElementSize})");
            long need = sref.ByteLength;
            sref.Loader = () =>
            {
                var bytes = ReadEntry(rec, file, need, archiveLength);
                if (bigEndian) SwapToLittle(bytes, sref.ElementSize, sref.DType);
                return bytes;
            };
            storages[key] = sref;
            return sref;
        }

        var pkl = ReadEntry(entries[root + "data.pkl"], file, int.MaxValue, s.Length);
        using var ms = new MemoryStream(pkl, writable: false);
        var value = new Unpickler(ms, file, PersistentLoad, bytes => LoadNestedLegacy(bytes, file, 0)).Load();
        return Materialize(value, file);
    }

    /// <summary>The first <paramref name="limit"/> bytes (at most) of a record, checked against its declared size.</summary>
    static byte[] ReadEntry(ZipArchiveEntry e, string file, long limit, long archiveLength)
    {
        long len = Math.Min(e.Length, limit);
        if (len < 0 || len > Array.MaxLength) throw new ModelFormatException($"{file}: record {e.FullName} of {e.Length} bytes is too large");
        if (e.CompressedLength > archiveLength)
            throw new ModelFormatException($"{file}: record {e.FullName} claims {e.CompressedLength} bytes, more than the file holds (truncated?)");
        try
        {
            using var st = e.Open();
            byte[] buf;
            int got;
            if (len <= archiveLength)
            {
                buf = new byte[len];
                got = st.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false);
            }
            else
            {
                // NOTE: a compressed record may expand past the file's size; grow with the data actually read,
                // so a lying size field cannot make us allocate up front.
                var ms = new MemoryStream();
                var chunk = new byte[1 << 16];
                int n;
                while (ms.Length < len && (n = st.Read(chunk, 0, (int)Math.Min(chunk.Length, len - ms.Length))) > 0) ms.Write(chunk, 0, n);
                buf = ms.ToArray();
                got = buf.Length;
            }
            if (got != len) throw new ModelFormatException($"{file}: record {e.FullName} is truncated ({got} of {len} bytes)");
            return buf;
        }
        catch (InvalidDataException ex)
        {
            throw new ModelFormatException($"{file}: record {e.FullName} cannot be read: {ex.Message}", ex);
        }
    }

    static (PyGlobal cls, string key, long numel) StorageArgs(PyTuple pid, string file)
    {
        if (pid[1] is not PyGlobal cls || !(cls.Module == "torch" && Globals.StorageClasses.ContainsKey(cls.Name)) && cls.FullName != "torch.storage.TypedStorage")
            throw new ModelFormatException($"{file}: persistent id names {PyRepr.Of(pid[1])}, not a storage class");
        if (pid[2] is not string key) throw new ModelFormatException($"{file}: storage key is a {PyRepr.TypeName(pid[2])}, not a string");
        if (pid[3] is not (string or TorchDevice)) throw new ModelFormatException($"{file}: storage location is a {PyRepr.TypeName(pid[3])}, not a string");
        if (pid[4] is not long numel || numel < 0) throw new ModelFormatException($"{file}: storage '{key}' has an invalid element count {PyRepr.Of(pid[4])}");
        return (cls, key, numel);
    }

    static StorageRef NewStorage(PyGlobal cls, string key, long numel)
    {
        var (dtype, size, torchName) = Globals.StorageClasses.TryGetValue(cls.Name, out var info) ? info : (null, 1, "untyped");
        if (numel > long.MaxValue / 16) throw new ModelFormatException($"storage '{key}' element count {numel} is out of range");
        string? unsupported = dtype is null && torchName != "untyped"
            ? $"{cls.FullName} holds {torchName} elements, which Nabla does not support" : null;
        return new StorageRef { Key = key, ClassName = cls.FullName, DType = dtype, ElementSize = size, Numel = numel, Unsupported = unsupported };
    }

    static void SwapToLittle(byte[] bytes, int elementSize, DType? dtype)
    {
        // NOTE: complex elements swap per component; Nabla loads no complex dtype, so whole-element swaps suffice.
        if (elementSize == 1 || dtype is null) return;
        for (int i = 0; i + elementSize <= bytes.Length; i += elementSize) bytes.AsSpan(i, elementSize).Reverse();
    }

    // ---------------------------------------------------------------- legacy format

    static object? LoadLegacy(Stream s, string file, int nesting)
    {
        object? NoPid(PyTuple pid) => throw new ModelFormatException($"{file}: unexpected persistent id in the header pickles");
        var magic = new Unpickler(s, file, NoPid).Load();
        if (!(magic is BigInteger m && m == LegacyMagic))
            throw new ModelFormatException($"{file}: a pickle, but not a PyTorch checkpoint (legacy magic number missing; got {PyRepr.Of(magic)})");
        var protocol = new Unpickler(s, file, NoPid).Load();
        if (protocol is not 1001L) throw new ModelFormatException($"{file}: unsupported legacy protocol version {PyRepr.Of(protocol)} (expected 1001)");
        var sysInfo = new Unpickler(s, file, NoPid).Load();
        bool little = true;
        if (sysInfo is PyDict si && si.TryGetValue("little_endian", out var le) && le is bool lb) little = lb;

        var storages = new Dictionary<string, StorageRef>(StringComparer.Ordinal);
        object? PersistentLoad(PyTuple pid)
        {
            if (pid.Count > 0 && pid[0] is "module")
                throw new ModelFormatException($"{file}: the checkpoint pickles a whole module ({PyRepr.Of(pid.Count > 1 ? pid[1] : null)}); Nabla loads only data (save a state_dict instead)");
            if (pid.Count != 6 || pid[0] is not "storage")
                throw new ModelFormatException($"{file}: unsupported persistent id {PyRepr.Of(pid)} (expected ('storage', class, key, location, numel, view))");
            var (cls, key, numel) = StorageArgs(pid, file);
            if (!storages.TryGetValue(key, out var rootRef))
                storages[key] = rootRef = NewStorage(cls, key, numel);
            if (pid[5] is null) return rootRef;
            if (pid[5] is not PyTuple { Count: 3 } view || view[0] is not string viewKey || view[1] is not long off || view[2] is not long vsize || off < 0 || vsize < 0)
                throw new ModelFormatException($"{file}: storage '{key}' has a malformed view {PyRepr.Of(pid[5])}");
            if (storages.TryGetValue(viewKey, out var v)) return v;
            if (off + vsize > rootRef.Numel)
                throw new ModelFormatException($"{file}: storage view '{viewKey}' [{off}, {off + vsize}) is outside storage '{key}' ({rootRef.Numel} elements)");
            var viewRef = new StorageRef
            {
                Key = viewKey, ClassName = rootRef.ClassName, DType = rootRef.DType, ElementSize = rootRef.ElementSize,
                Unsupported = rootRef.Unsupported, Numel = vsize, Root = rootRef, RootByteOffset = off * rootRef.ElementSize,
            };
            storages[viewKey] = viewRef;
            return viewRef;
        }

        var value = new Unpickler(s, file, PersistentLoad, bytes => LoadNestedLegacy(bytes, file, nesting)).Load();
        var keys = new Unpickler(s, file, NoPid).Load();
        if (keys is not PyList keyList) throw new ModelFormatException($"{file}: the storage key list is a {PyRepr.TypeName(keys)}, not a list");
        Span<byte> count = stackalloc byte[8];
        foreach (var k in keyList)
        {
            if (k is not string key) throw new ModelFormatException($"{file}: storage key {PyRepr.Of(k)} is not a string");
            if (!storages.TryGetValue(key, out var sref) || sref.Root is not null)
                throw new ModelFormatException($"{file}: storage '{key}' in the key list is not used by the pickle");
            if (s.Length - s.Position < 8) throw new ModelFormatException($"{file}: truncated before the data of storage '{key}'");
            s.ReadExactly(count);
            long stored = BinaryPrimitives.ReadInt64LittleEndian(count);
            if (!little) stored = BinaryPrimitives.ReverseEndianness(stored);
            if (stored != sref.Numel)
                throw new ModelFormatException($"{file}: storage '{key}' declares {sref.Numel} elements but its data holds {stored}");
            long bytes = sref.ByteLength;
            if (bytes > s.Length - s.Position)
                throw new ModelFormatException($"{file}: truncated data of storage '{key}' ({bytes} bytes needed, {s.Length - s.Position} left)");
            if (bytes > Array.MaxLength) throw new ModelFormatException($"{file}: storage '{key}' of {bytes} bytes is too large");
            var data = new byte[bytes];
            s.ReadExactly(data);
            if (!little) SwapToLittle(data, sref.ElementSize, sref.DType);
            sref.SetData(data);
        }
        var listed = keyList.OfType<string>().ToHashSet(StringComparer.Ordinal);
        foreach (var (key, sref) in storages)
            if (sref.Root is null && !listed.Contains(key))
                throw new ModelFormatException($"{file}: storage '{key}' has no data (missing from the key list)");
        return Materialize(value, file);
    }

    /// <summary>torch.storage._load_from_bytes: a legacy checkpoint of one storage, inside a pickle.</summary>
    static object? LoadNestedLegacy(byte[] bytes, string file, int nesting)
    {
        if (nesting >= 2) throw new ModelFormatException($"{file}: storages nested more than 2 deep");
        using var ms = new MemoryStream(bytes, writable: false);
        var v = LoadLegacyRaw(ms, file + " (nested storage)", nesting + 1);
        return v;
    }

    static object? LoadLegacyRaw(Stream s, string file, int nesting)
    {
        var v = LoadLegacy(s, file, nesting);
        // Materialize turned a bare storage into a 1-D tensor; turn it back into a storage the outer pickle can use.
        if (v is Tensor t)
        {
            var dtype = t.DType;
            var bytes = t.ToBytes();
            var sref = new StorageRef
            {
                Key = "nested", ClassName = "torch.storage", DType = dtype, ElementSize = dtype.ElementSize(), Numel = t.NumElements,
            };
            sref.SetData(bytes);
            return sref;
        }
        throw new ModelFormatException($"{file}: a nested storage pickle holds a {PyRepr.TypeName(v)}, not a storage");
    }

    // ---------------------------------------------------------------- materialization

    /// <summary>
    /// Replaces every tensor and storage reference in the tree by a Nabla tensor (one per reference). A tensor that
    /// cannot be read throws <see cref="ModelFormatException"/> naming the file and the tensor's path in the tree
    /// (dotted dict keys, [i] for list items: <c>model_state_dict.fc.weight</c>).
    /// </summary>
    static object? Materialize(object? root, string file)
    {
        var built = new Dictionary<object, Tensor>(ReferenceEqualityComparer.Instance);
        var visited = new HashSet<object>(ReferenceEqualityComparer.Instance);

        Tensor Named(string path, Func<Tensor> build)
        {
            try
            {
                return build();
            }
            catch (ModelFormatException e) when (path.Length > 0)
            {
                string reason = e.Message.StartsWith(file + ": ", StringComparison.Ordinal) ? e.Message[(file.Length + 2)..] : e.Message;
                throw new ModelFormatException($"{file}: tensor '{path}': {reason}", e);
            }
        }

        static string Child(string path, object? key) => key switch
        {
            string s => path.Length == 0 ? s : path + "." + s,
            _ => path + "[" + PyRepr.Of(key) + "]",
        };

        object? Visit(object? v, int depth, string path)
        {
            if (depth > MaxDepth) throw new ModelFormatException($"{file}: objects nested more than {MaxDepth} deep");
            switch (v)
            {
                case TensorRef tr:
                    if (!built.TryGetValue(tr, out var t)) built[tr] = t = Named(path, () => Build(tr, file));
                    return t;
                case StorageRef sr:
                    if (!built.TryGetValue(sr, out var st))
                    {
                        if (sr.DType is not DType dt) throw new ModelFormatException($"{file}: {sr.Unsupported ?? $"untyped storage '{sr.Key}' cannot be loaded on its own"}");
                        if (sr.Numel > int.MaxValue) throw new ModelFormatException($"{file}: storage '{sr.Key}' has too many elements");
                        built[sr] = st = Named(path, () => Build(new TensorRef { Storage = sr, DType = dt, Offset = 0, Size = [(int)sr.Numel], Stride = [1] }, file));
                    }
                    return st;
                case PyGlobal g:
                    return g.FullName;
                case PyDict d:
                    if (visited.Add(d))
                    {
                        d.ReplaceValues((k, x) => Visit(x, depth + 1, Child(path, k)));
                        foreach (var k in d.Attributes.Keys.ToList()) d.Attributes[k] = Visit(d.Attributes[k], depth + 1, Child(path, k));
                    }
                    return d;
                case PyList l:
                    if (visited.Add(l)) for (int i = 0; i < l.Count; i++) l[i] = Visit(l[i], depth + 1, Child(path, (long)i));
                    return l;
                case PySet s:
                    if (visited.Add(s)) for (int i = 0; i < s.Count; i++) s[i] = Visit(s[i], depth + 1, Child(path, (long)i));
                    return s;
                case PyTuple tu:
                    if (visited.Add(tu)) for (int i = 0; i < tu.Items.Length; i++) tu.Items[i] = Visit(tu.Items[i], depth + 1, Child(path, (long)i));
                    return tu;
                default:
                    return v;
            }
        }
        return Visit(root, 0, "");
    }

    /// <summary>
    /// Copies a (possibly strided) view of a storage into a new contiguous tensor. A dimension with stride 0 (an
    /// expanded tensor) is not copied out: the tensor is the copy without it, expanded again as a stride-0 view, so
    /// the memory it takes is bounded by its storage, whose size the file vouches for. A view whose other strides
    /// overlap so that it holds more bytes than its storage is refused.
    /// </summary>
    static Tensor Build(TensorRef tr, string file)
    {
        if (tr.Invalid is not null) throw new ModelFormatException($"{file}: {tr.Invalid}");
        if (tr.Size.Where((s, d) => s > 1 && tr.Stride[d] == 0).Any())
        {
            var reduced = new TensorRef
            {
                Storage = tr.Storage, DType = tr.DType, Offset = tr.Offset, Stride = tr.Stride,
                Size = tr.Size.Select((s, d) => tr.Stride[d] == 0 && s > 1 ? 1 : s).ToArray(),
            };
            return Build(reduced, file).Expand(tr.Size);
        }
        {
            long n = 1;
            foreach (var s in tr.Size) n *= s;
            if (n * tr.DType.ElementSize() > tr.Storage.ByteLength)
                throw new ModelFormatException($"{file}: a view of size ({string.Join(", ", tr.Size)}) and stride ({string.Join(", ", tr.Stride)}) overlaps itself and holds more than its storage '{tr.Storage.Key}' ({tr.Storage.ByteLength} bytes); such views are not supported");
        }
        int es = tr.DType.ElementSize();
        ReadOnlySpan<byte> src;
        try
        {
            src = tr.Storage.Bytes();
        }
        catch (ModelFormatException) { throw; }
        catch (Exception e) when (e is InvalidOperationException or OverflowException or ArgumentOutOfRangeException)
        {
            throw new ModelFormatException($"{file}: storage '{tr.Storage.Key}' cannot be read: {e.Message}", e);
        }
        int rank = tr.Size.Length;
        long numel = 1;
        foreach (var s in tr.Size) numel *= s;
        long total = numel * es;
        if (total > Array.MaxLength) throw new ModelFormatException($"{file}: tensor of {numel} elements is too large for one array");
        if (numel > 0)
        {
            // Contiguous row-major view: one copy, from the storage's bytes into the tensor.
            bool contiguous = true;
            long expect = 1;
            for (int d = rank - 1; d >= 0; d--)
            {
                if (tr.Size[d] != 1 && tr.Stride[d] != expect) { contiguous = false; break; }
                expect *= tr.Size[d];
            }
            if (contiguous) return Tensor.FromBytes(src.Slice(checked((int)(tr.Offset * es)), (int)total), tr.DType, tr.Size);
        }
        var dst = new byte[total];
        if (numel > 0)
        {
            // A strided view: element by element, into row-major order.
            var idx = new int[rank];
            long srcIndex = tr.Offset;
            for (long i = 0; i < numel; i++)
            {
                src.Slice((int)(srcIndex * es), es).CopyTo(dst.AsSpan((int)(i * es), es));
                for (int d = rank - 1; d >= 0; d--)
                {
                    if (++idx[d] < tr.Size[d]) { srcIndex += tr.Stride[d]; break; }
                    srcIndex -= (long)(idx[d] - 1) * tr.Stride[d];
                    idx[d] = 0;
                }
            }
        }
        return Tensor.FromBytes(dst, tr.DType, tr.Size);
    }
}
