using System.Numerics;
using System.Text;

namespace Nabla.Interop;

/// <summary>
/// The allow-list of pickle globals and their meaning as data constructors. Nothing here runs code from the file.
/// </summary>
internal static class Globals
{
    /// <summary>Storage classes: element type (null when Nabla has none) and element size.</summary>
    internal static readonly Dictionary<string, (DType? DType, int Size, string TorchDType)> StorageClasses = new()
    {
        ["FloatStorage"] = (DType.Float32, 4, "float32"),
        ["DoubleStorage"] = (DType.Float64, 8, "float64"),
        ["HalfStorage"] = (DType.Float16, 2, "float16"),
        ["BFloat16Storage"] = (DType.BFloat16, 2, "bfloat16"),
        ["LongStorage"] = (DType.Int64, 8, "int64"),
        ["IntStorage"] = (DType.Int32, 4, "int32"),
        ["ShortStorage"] = (DType.Int16, 2, "int16"),
        ["CharStorage"] = (DType.Int8, 1, "int8"),
        ["ByteStorage"] = (DType.UInt8, 1, "uint8"),
        ["BoolStorage"] = (DType.Bool, 1, "bool"),
        ["ComplexFloatStorage"] = (null, 8, "complex64"),
        ["ComplexDoubleStorage"] = (null, 16, "complex128"),
        ["QInt8Storage"] = (null, 1, "qint8"),
        ["QUInt8Storage"] = (null, 1, "quint8"),
        ["QInt32Storage"] = (null, 4, "qint32"),
        ["QUInt4x2Storage"] = (null, 1, "quint4x2"),
        ["QUInt2x4Storage"] = (null, 1, "quint2x4"),
        ["UntypedStorage"] = (null, 1, "untyped"),
    };

    /// <summary>torch.&lt;dtype&gt; globals (for _rebuild_tensor_v3): Nabla's dtype or null when unsupported.</summary>
    static readonly Dictionary<string, DType?> TorchDTypes = new()
    {
        ["float32"] = DType.Float32, ["float"] = DType.Float32,
        ["float64"] = DType.Float64, ["double"] = DType.Float64,
        ["float16"] = DType.Float16, ["half"] = DType.Float16,
        ["bfloat16"] = DType.BFloat16,
        ["int64"] = DType.Int64, ["long"] = DType.Int64,
        ["int32"] = DType.Int32, ["int"] = DType.Int32,
        ["int8"] = DType.Int8, ["uint8"] = DType.UInt8, ["bool"] = DType.Bool,
        ["int16"] = DType.Int16, ["short"] = DType.Int16,
        ["uint16"] = DType.UInt16, ["uint32"] = DType.UInt32, ["uint64"] = DType.UInt64,
        ["complex32"] = null, ["complex64"] = null, ["complex128"] = null, ["cfloat"] = null, ["cdouble"] = null,
        ["float8_e5m2"] = null, ["float8_e4m3fn"] = null, ["float8_e5m2fnuz"] = null, ["float8_e4m3fnuz"] = null,
        ["float8_e8m0fnu"] = null, ["qint8"] = null, ["quint8"] = null, ["qint32"] = null,
    };

    static readonly HashSet<string> Constructors =
    [
        "collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray", "_codecs.encode",
        "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2", "torch.Size", "torch.device", "torch.storage._load_from_bytes",
        "torch.nn.parameter.Parameter", "torch.Tensor", "torch.storage.TypedStorage", "torch.serialization._get_layout",
    ];

    static readonly HashSet<string> KnownUnsupported =
    [
        "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_sparse_csr_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_nested_tensor", "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch._utils._rebuild_xla_tensor",
        "torch._utils._rebuild_mlc_tensor",
    ];

    /// <summary>The value a GLOBAL pushes; refuses every name off the allow-list, naming it.</summary>
    public static object Resolve(string module, string name, string file)
    {
        var full = module + "." + name;
        if (Constructors.Contains(full)) return new PyGlobal(module, name);
        if (module == "torch" && StorageClasses.ContainsKey(name)) return new PyGlobal(module, name);
        if (module == "torch" && TorchDTypes.ContainsKey(name)) return new PyGlobal(module, name);
        if (KnownUnsupported.Contains(full))
            throw new ModelFormatException($"{file}: {full} is not supported (quantized, sparse, nested, meta and device-specific tensors cannot be loaded)");
        if (module.StartsWith("__torch__", StringComparison.Ordinal))
            throw new ModelFormatException($"{file}: global {full} comes from a TorchScript archive; TorchScript is not supported");
        throw new ModelFormatException(
            $"{file}: global '{full}' is not allowed; Nabla loads checkpoints like torch.load(weights_only=True) and never executes code from a file " +
            "(whole pickled modules and custom classes cannot be loaded: save a state_dict instead)");
    }

    public static bool IsNewObjClass(string fullName) => fullName is "collections.OrderedDict" or "builtins.set" or "builtins.frozenset" or "torch.nn.parameter.Parameter";

    /// <summary>The element type of a torch.&lt;dtype&gt; global; throws for one Nabla lacks.</summary>
    static DType DTypeOf(object? v)
    {
        if (v is PyGlobal { Module: "torch" } g && TorchDTypes.TryGetValue(g.Name, out var d))
            return d ?? throw new GlobalCallException($"tensors of dtype torch.{g.Name} are not supported by Nabla");
        throw new GlobalCallException($"expected a torch dtype, got {PyRepr.Of(v)}");
    }

    public static object? Call(PyGlobal g, PyTuple a, Func<byte[], object?>? loadFromBytes)
    {
        switch (g.FullName)
        {
            case "collections.OrderedDict":
                {
                    var d = new PyDict { IsOrdered = true };
                    if (a.Count == 0) return d;
                    if (a.Count != 1 || a[0] is not (PyList or PyTuple)) throw new GlobalCallException("expects () or (list of pairs,)");
                    foreach (var item in (IEnumerable<object?>)a[0]!)
                    {
                        if (item is not PyTuple { Count: 2 } kv || !PyDict.IsHashable(kv[0])) throw new GlobalCallException("items must be hashable (key, value) pairs");
                        d[kv[0]] = kv[1];
                    }
                    return d;
                }
            case "builtins.set" or "builtins.frozenset":
                {
                    var s = new PySet { IsFrozen = g.Name == "frozenset" };
                    if (a.Count == 0) return s;
                    if (a.Count != 1 || a[0] is not IEnumerable<object?> items || a[0] is PyDict) throw new GlobalCallException("expects () or (iterable,)");
                    s.AddRange(items);
                    return s;
                }
            case "builtins.bytearray":
                if (a.Count == 0) return Array.Empty<byte>();
                if (a[0] is byte[] b) return b;
                if (a.Count == 2 && a[0] is string bs && a[1] is string enc) return Encode(bs, enc);
                throw new GlobalCallException("expects bytes");
            case "_codecs.encode":
                if (a.Count is 1 or 2 && a[0] is string text && (a.Count == 1 || a[1] is string))
                    return Encode(text, a.Count == 2 ? (string)a[1]! : "utf-8");
                throw new GlobalCallException("expects (str, encoding)");
            case "torch.Size":
                if (a.Count == 1 && a[0] is PyTuple size) return size;
                if (a.Count == 0) return PyTuple.Empty;
                throw new GlobalCallException("expects (tuple,)");
            case "torch.device":
                if (a.Count == 1 && a[0] is string dev) return new TorchDevice(dev);
                if (a.Count == 2 && a[0] is string type && a[1] is long index) return new TorchDevice($"{type}:{index}");
                throw new GlobalCallException("expects (str,) or (str, int)");
            case "torch._utils._rebuild_tensor":
                if (a.Count != 4) throw new GlobalCallException($"expects 4 arguments, got {a.Count}");
                return RebuildTensor(a[0], a[1], a[2], a[3], null);
            case "torch._utils._rebuild_tensor_v2":
                if (a.Count is < 6 or > 7) throw new GlobalCallException($"expects 6 or 7 arguments, got {a.Count}");
                return RebuildTensor(a[0], a[1], a[2], a[3], null);
            case "torch._utils._rebuild_tensor_v3":
                if (a.Count is < 7 or > 8) throw new GlobalCallException($"expects 7 or 8 arguments, got {a.Count}");
                return RebuildTensor(a[0], a[1], a[2], a[3], DTypeOf(a[6]));
            case "torch._utils._rebuild_parameter":
                if (a.Count != 3 || a[0] is not TensorRef p) throw new GlobalCallException("expects (tensor, requires_grad, hooks)");
                return p;
            case "torch._utils._rebuild_parameter_with_state":
                if (a.Count != 4 || a[0] is not TensorRef ps) throw new GlobalCallException("expects (tensor, requires_grad, hooks, state)");
                return ps;
            case "torch.nn.parameter.Parameter":
                if (a.Count is 1 or 2 && a[0] is TensorRef pt) return pt;
                throw new GlobalCallException("expects (tensor[, requires_grad])");
            case "torch._tensor._rebuild_from_type_v2":
                {
                    if (a.Count != 4 || a[0] is not PyGlobal func || a[2] is not PyTuple inner)
                        throw new GlobalCallException("expects (func, type, args, state)");
                    if (func.FullName is not ("torch._utils._rebuild_tensor_v2" or "torch._utils._rebuild_tensor_v3" or "torch._utils._rebuild_tensor" or "torch._utils._rebuild_parameter"))
                        throw new GlobalCallException($"rebuild function {func.FullName} is not allowed");
                    return Call(func, inner, loadFromBytes);
                }
            case "torch.storage._load_from_bytes":
                if (loadFromBytes is null) throw new GlobalCallException("nested storages are not allowed here");
                if (a.Count != 1 || a[0] is not byte[] bytes) throw new GlobalCallException("expects (bytes,)");
                return loadFromBytes(bytes);
            default:
                throw new GlobalCallException("is a type or marker, not a constructor Nabla accepts");
        }
    }

    static byte[] Encode(string text, string encoding)
    {
        switch (encoding.ToLowerInvariant().Replace('-', '_'))
        {
            case "latin1" or "latin_1" or "iso_8859_1" or "iso8859_1":
                var b = new byte[text.Length];
                for (int i = 0; i < text.Length; i++)
                {
                    if (text[i] > 0xFF) throw new GlobalCallException("character outside latin-1");
                    b[i] = (byte)text[i];
                }
                return b;
            case "utf8" or "utf_8":
                return Encoding.UTF8.GetBytes(text);
            default:
                throw new GlobalCallException($"encoding '{encoding}' is not supported");
        }
    }

    static long ToLong(object? v, string what) => v switch
    {
        long l => l,
        BigInteger => throw new GlobalCallException($"{what} is out of range"),
        _ => throw new GlobalCallException($"{what} is a {PyRepr.TypeName(v)}, not an int"),
    };

    static TensorRef RebuildTensor(object? storageArg, object? offsetArg, object? sizeArg, object? strideArg, DType? v3DType)
    {
        if (storageArg is not StorageRef storage) throw new GlobalCallException($"storage argument is a {PyRepr.TypeName(storageArg)}, not a storage");
        DType dtype;
        if (v3DType is DType d3) dtype = d3;
        else if (storage.DType is DType sd) dtype = sd;
        else throw new GlobalCallException(storage.Unsupported ?? $"storage class {storage.ClassName} needs a dtype");
        if (storage.DType is DType sdt && sdt != dtype)
            throw new GlobalCallException($"tensor dtype {dtype.TorchName()} differs from its storage's {sdt.TorchName()}");
        long offset = ToLong(offsetArg, "storage_offset");
        if (sizeArg is not PyTuple sizeT) throw new GlobalCallException("size is not a tuple");
        if (strideArg is not PyTuple strideT) throw new GlobalCallException("stride is not a tuple");
        if (sizeT.Count != strideT.Count) throw new GlobalCallException($"size has {sizeT.Count} dims but stride has {strideT.Count}");
        if (sizeT.Count > 64) throw new GlobalCallException($"{sizeT.Count} dimensions are too many");
        var size = new int[sizeT.Count];
        var stride = new long[sizeT.Count];
        long numel = 1;
        for (int i = 0; i < size.Length; i++)
        {
            long s = ToLong(sizeT[i], "size"), st = ToLong(strideT[i], "stride");
            if (s < 0 || s > int.MaxValue) throw new GlobalCallException($"size {s} in dim {i} is out of range");
            if (st < 0) throw new GlobalCallException($"negative stride {st} in dim {i}");
            size[i] = (int)s;
            stride[i] = st;
            numel = numel == 0 || s == 0 ? 0 : (numel > int.MaxValue / s ? throw new GlobalCallException($"shape ({string.Join(", ", size[..(i + 1)])}, ...) has more than 2^31 elements") : numel * s);
        }
        long elementSize = dtype.ElementSize();
        long storageElements = storage.ByteLength / elementSize;
        if (offset < 0) throw new GlobalCallException($"negative storage offset {offset}");
        if (numel > 0)
        {
            long last = offset;
            foreach (var (s, st) in size.Zip(stride))
            {
                if (st > (long.MaxValue / 4) / Math.Max(1, s)) throw new GlobalCallException("stride is out of range");
                last += (s - 1) * st;
                if (last > long.MaxValue / 4) throw new GlobalCallException("stride is out of range");
            }
            // NOTE: reported when the tensor is materialized, where its name in the checkpoint is known.
            if (last >= storageElements)
                return new TensorRef
                {
                    Storage = storage, DType = dtype, Offset = offset, Size = size, Stride = stride,
                    Invalid = $"size ({string.Join(", ", size)}), stride ({string.Join(", ", stride)}) and offset {offset} reach element {last}, past the end of storage '{storage.Key}' ({storageElements} elements)",
                };
        }
        return new TensorRef { Storage = storage, DType = dtype, Offset = offset, Size = size, Stride = stride };
    }
}
