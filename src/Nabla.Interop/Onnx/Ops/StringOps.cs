using System.Globalization;
using System.Text;
using Nabla.Graph;
using Nabla.Interop.Onnx.Proto;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// String tensors in graph runs. <see cref="Wrap"/> puts a resolver in front of the operator table for models that
/// use strings: data-movement operators (Reshape, Concat, Gather, Where, ...) run their ordinary kernel on Int64
/// tensors of element indices and map the indices back to strings, so their semantics (broadcasting, negative
/// indices, clamping) are exactly the numeric ones; Equal runs on interned ids; Cast parses and formats as ONNX
/// defines; ai.onnx.ml LabelEncoder maps strings, int64s and floats; Constant takes string values. Every other
/// operator refuses a string input with an error naming the node.
/// </summary>
internal static class StringOps
{
    /// <summary>Operators whose outputs are elements of their data inputs; the positions of the data inputs (null: all).</summary>
    static readonly Dictionary<string, int[]?> Movement = new()
    {
        ["Identity"] = [0], ["Reshape"] = [0], ["Flatten"] = [0], ["Squeeze"] = [0], ["Unsqueeze"] = [0],
        ["Transpose"] = [0], ["Concat"] = null, ["Gather"] = [0], ["GatherElements"] = [0], ["GatherND"] = [0],
        ["Slice"] = [0], ["Expand"] = [0], ["Tile"] = [0], ["Split"] = [0], ["Where"] = [1, 2], ["Compress"] = [0],
        ["ReverseSequence"] = [0], ["DepthToSpace"] = [0], ["SpaceToDepth"] = [0],
    };

    /// <summary>Operators that only read the shape of a string input.</summary>
    static readonly HashSet<string> ShapeOnly = ["Shape", "Size"];

    public static IOpResolver Wrap(IOpResolver inner) => new Resolver(inner);

    sealed class Resolver(IOpResolver inner) : IOpResolver
    {
        public OpKernel Resolve(Node node, long opset)
        {
            if (node.Domain == "ai.onnx.ml")
            {
                if (node.OpType == "LabelEncoder") return LabelEncoder(node, opset);
                throw new ModelFormatException($"{node.Describe()}: unsupported operator ai.onnx.ml.{node.OpType} (opset {opset})");
            }
            if (node.OpType == "Constant" && (node.Has("value_string") || node.Has("value_strings")))
            {
                var s = node.Has("value_string")
                    ? StringTensor.FromStrings([node.GetString("value_string", "")])
                    : StringTensor.FromStrings(node.GetStrings("value_strings")!, node.GetStrings("value_strings")!.Length);
                if (node.Has("value_string")) s = new StringTensor(s.Data, []);
                return _ => [s.ToCarrier()];
            }
            var k = inner.Resolve(node, opset);
            if (Movement.TryGetValue(node.OpType, out var data)) return c => RunOnIndices(c, k, data, stringOutputs: true);
            if (ShapeOnly.Contains(node.OpType)) return c => RunOnIndices(c, k, [0], stringOutputs: false);
            return node.OpType switch
            {
                "Cast" => c => Cast(c, k),
                "Equal" => c => Equal(c, k),
                _ => c =>
                {
                    for (int i = 0; i < c.InputCount; i++)
                        if (StringTensor.IsCarrier(c.Inputs[i]))
                            throw new NablaException($"{c.Node.Describe()}: input {i} is a string tensor; {c.Node.OpType} takes no strings");
                    return k(c);
                },
            };
        }
    }

    /// <summary>Whether a model uses strings anywhere (values, initializers, constants, casts, ai.onnx.ml operators).</summary>
    public static bool Uses(GraphProto g)
    {
        if (g.Input.Concat(g.Output).Concat(g.ValueInfo).Any(v => v.Type?.TensorType?.ElemType == OnnxTypes.String)) return true;
        if (g.Initializer.Any(t => t.DataType == OnnxTypes.String)) return true;
        foreach (var n in g.Node)
        {
            if (n.Domain == "ai.onnx.ml") return true;
            foreach (var a in n.Attribute)
            {
                if (n.OpType == "Cast" && a.Name == "to" && a.I == OnnxTypes.String) return true;
                if (a.Name is "value_string" or "value_strings" || a.T?.DataType == OnnxTypes.String) return true;
                if (a.G is not null && Uses(a.G)) return true;
                if (a.Graphs.Any(Uses)) return true;
            }
        }
        return false;
    }

    static Tensor?[] RunOnIndices(OpContext c, OpKernel k, int[]? dataInputs, bool stringOutputs)
    {
        bool any = false;
        for (int i = 0; i < c.InputCount; i++) any |= StringTensor.IsCarrier(c.Inputs[i]);
        if (!any) return k(c);
        var table = new List<byte[]>();
        var args = new Tensor?[c.InputCount];
        for (int i = 0; i < args.Length; i++)
        {
            var x = c.Inputs[i];
            bool isData = dataInputs is null || Array.IndexOf(dataInputs, i) >= 0;
            var s = StringTensor.FromCarrier(x);
            if (s is null)
            {
                if (isData && x is not null)
                    throw new NablaException($"{c.Node.Describe()}: input {i} is {x.DType.TorchName()}, but the other data inputs are strings");
                args[i] = x;
                continue;
            }
            if (!isData) throw new NablaException($"{c.Node.Describe()}: input {i} is a string tensor; it must be numeric");
            var idx = new long[s.Count];
            for (int j = 0; j < idx.Length; j++) idx[j] = table.Count + j;
            table.AddRange(s.Data);
            args[i] = Tensor.FromArray(idx, idx.Length).Reshape(s.Shape);
        }
        var outs = k(c.WithInputs(args));
        if (!stringOutputs) return outs;
        var result = new Tensor?[outs.Length];
        for (int o = 0; o < outs.Length; o++)
        {
            if (outs[o] is not { } t) continue;
            var ids = t.ToArray<long>();
            var strings = new byte[ids.Length][];
            for (int j = 0; j < ids.Length; j++) strings[j] = table[checked((int)ids[j])];
            result[o] = new StringTensor(strings, t.Shape).ToCarrier();
        }
        return result;
    }

    /// <summary>Equal on two string tensors: each distinct string gets one id, then the numeric kernel compares (and broadcasts) ids.</summary>
    static Tensor?[] Equal(OpContext c, OpKernel k)
    {
        var a = StringTensor.FromCarrier(c.Inputs[0]);
        var b = StringTensor.FromCarrier(c.OptionalInput(1));
        if (a is null && b is null) return k(c);
        if (a is null || b is null) throw new NablaException($"{c.Node.Describe()}: Equal compares a string tensor with a {(a is null ? c.Input(0) : c.Input(1)).DType.TorchName()} tensor");
        var ids = new Dictionary<byte[], long>(ByteComparer.Instance);
        Tensor Ids(StringTensor s)
        {
            var r = new long[s.Count];
            for (int i = 0; i < r.Length; i++)
            {
                if (!ids.TryGetValue(s.Data[i], out var id)) ids[s.Data[i]] = id = ids.Count;
                r[i] = id;
            }
            return Tensor.FromArray(r, r.Length).Reshape(s.Shape);
        }
        return k(c.WithInputs([Ids(a), Ids(b)]));
    }

    /// <summary>
    /// Cast to and from STRING. Parsing accepts plain and scientific notation and, case-insensitively, "INF", "+INF",
    /// "-INF" and "NaN" (also "Infinity"); to an integer type the value is truncated toward zero. Formatting writes
    /// integers in decimal, floats with 8 significant digits ("%.8g", as ONNX Runtime and NumPy's float32 repr),
    /// doubles with 17, and "NaN", "INF", "-INF"; booleans as "1"/"0".
    /// </summary>
    static Tensor?[] Cast(OpContext c, OpKernel k)
    {
        var to = (int)c.Node.GetInt("to", 0);
        var s = StringTensor.FromCarrier(c.Inputs[0]);
        if (s is null)
        {
            if (to != OnnxTypes.String) return k(c);
            return [Format(c.Input(0)).ToCarrier()];
        }
        if (to == OnnxTypes.String) return [new StringTensor(s.Data, s.Shape).ToCarrier()];
        var dtype = OnnxTypes.TryToDType(to) ?? throw Unsupported(c, $"target type {OnnxTypes.Name(to)}");
        var values = new double[s.Count];
        for (int i = 0; i < values.Length; i++)
        {
            var text = Encoding.UTF8.GetString(s.Data[i]);
            if (!TryParse(text, out var v))
                throw new NablaException($"{c.Node.Describe()}: string element {i} ('{(text.Length > 32 ? text[..32] + "..." : text)}') is not a number");
            values[i] = dtype.IsFloatingPoint() ? v : Math.Truncate(v);
        }
        if (dtype == DType.Int64)
        {
            // NOTE: int64 values past 2^53 would lose digits through double; parse them as integers directly.
            var longs = new long[s.Count];
            for (int i = 0; i < longs.Length; i++)
                longs[i] = long.TryParse(Encoding.UTF8.GetString(s.Data[i]), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) ? l : checked((long)values[i]);
            return [Tensor.FromArray(longs, longs.Length).Reshape(s.Shape)];
        }
        if (dtype == DType.UInt64)
        {
            var ulongs = new ulong[s.Count];
            for (int i = 0; i < ulongs.Length; i++)
                ulongs[i] = ulong.TryParse(Encoding.UTF8.GetString(s.Data[i]), NumberStyles.Integer, CultureInfo.InvariantCulture, out var u) ? u : values[i] >= 9223372036854775808.0 ? (ulong)values[i] : unchecked((ulong)(long)values[i]);
            return [Tensor.FromArray(ulongs, ulongs.Length).Reshape(s.Shape)];
        }
        return [FromDoubles(values, s.Shape, dtype)];
    }

    static bool TryParse(string text, out double v)
    {
        var t = text.Trim();
        if (t.Equals("INF", StringComparison.OrdinalIgnoreCase) || t.Equals("+INF", StringComparison.OrdinalIgnoreCase)
            || t.Equals("Infinity", StringComparison.OrdinalIgnoreCase) || t.Equals("+Infinity", StringComparison.OrdinalIgnoreCase)) { v = double.PositiveInfinity; return true; }
        if (t.Equals("-INF", StringComparison.OrdinalIgnoreCase) || t.Equals("-Infinity", StringComparison.OrdinalIgnoreCase)) { v = double.NegativeInfinity; return true; }
        if (t.Equals("NaN", StringComparison.OrdinalIgnoreCase) || t.Equals("+NaN", StringComparison.OrdinalIgnoreCase) || t.Equals("-NaN", StringComparison.OrdinalIgnoreCase)) { v = double.NaN; return true; }
        return double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out v);
    }

    static StringTensor Format(Tensor x)
    {
        string[] r = x.DType switch
        {
            DType.Bool => [.. x.ToArray<bool>().Select(b => b ? "1" : "0")],
            DType.UInt8 => [.. x.ToArray<byte>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.Int8 => [.. x.ToArray<sbyte>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.Int32 => [.. x.ToArray<int>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.Int64 => [.. x.ToArray<long>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.Int16 => [.. x.ToArray<short>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.UInt16 => [.. x.ToArray<ushort>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.UInt32 => [.. x.ToArray<uint>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.UInt64 => [.. x.ToArray<ulong>().Select(v => v.ToString(CultureInfo.InvariantCulture))],
            DType.Float64 => [.. x.ToArray<double>().Select(v => FormatReal(v, 17))],
            _ => [.. x.To(DType.Float32).ToArray<float>().Select(v => FormatReal(v, 8))],
        };
        return StringTensor.FromStrings(r, x.Shape);
    }

    /// <summary>C's "%.{digits}g": shortest of fixed and scientific with that many significant digits, trailing zeros dropped.</summary>
    internal static string FormatReal(double v, int digits)
    {
        if (double.IsNaN(v)) return "NaN";
        if (double.IsInfinity(v)) return v > 0 ? "INF" : "-INF";
        // .NET's "G" picks fixed or scientific by the same rule as C's %g; only the exponent's letter differs.
        return v.ToString("G" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture).Replace("E", "e", StringComparison.Ordinal);
    }

    /// <summary>ai.onnx.ml LabelEncoder (opsets 2 to 4, list attributes): maps each element through keys → values, else the default.</summary>
    static OpKernel LabelEncoder(Node node, long opset)
    {
        if (opset < 2 || opset > 4)
            throw new ModelFormatException($"{node.Describe()}: unsupported opset {opset} for ai.onnx.ml.LabelEncoder (Nabla implements 2..4)");
        if (node.Has("keys_tensor") || node.Has("values_tensor") || node.Has("default_tensor"))
            throw new ModelFormatException($"{node.Describe()}: LabelEncoder's tensor attributes are not supported; use the list attributes");
        object[]? keys = node.GetStrings("keys_strings") is { } ks ? [.. ks]
            : node.GetInts("keys_int64s") is { } ki ? [.. ki.Cast<object>()]
            : node.GetFloats("keys_floats") is { } kf ? [.. kf.Cast<object>()] : null;
        object[]? values = node.GetStrings("values_strings") is { } vs ? [.. vs]
            : node.GetInts("values_int64s") is { } vi ? [.. vi.Cast<object>()]
            : node.GetFloats("values_floats") is { } vf ? [.. vf.Cast<object>()] : null;
        if (keys is null || values is null)
            throw new ModelFormatException($"{node.Describe()}: LabelEncoder needs one keys_* and one values_* attribute");
        if (keys.Length != values.Length)
            throw new ModelFormatException($"{node.Describe()}: LabelEncoder has {keys.Length} keys but {values.Length} values");
        var map = new Dictionary<string, object>(StringComparer.Ordinal);
        for (int i = 0; i < keys.Length; i++) map[Key(keys[i])] = values[i];
        object fallback = values[0] switch
        {
            string => node.GetString("default_string", "_Unused"),
            long => node.GetInt("default_int64", -1),
            _ => (float)node.GetFloat("default_float", -0.0),
        };
        string keyKind = keys[0] switch { string => "string", long => "int64", _ => "float" };
        return c =>
        {
            var x = c.Input(0);
            var s = StringTensor.FromCarrier(x);
            string[] inKeys;
            string got = s is not null ? "string" : x.DType == DType.Int64 ? "int64" : x.DType == DType.Float32 ? "float" : x.DType.TorchName();
            if (got != keyKind) throw new NablaException($"{c.Node.Describe()}: the input is {got}, but the keys are {keyKind}");
            int[] shape = s?.Shape ?? x.Shape;
            inKeys = s is not null ? [.. s.ToStrings().Select(Key)]
                : x.DType == DType.Int64 ? [.. x.ToArray<long>().Select(v => Key(v))]
                : [.. x.ToArray<float>().Select(v => Key(v))];
            var mapped = inKeys.Select(key => map.TryGetValue(key, out var v) ? v : fallback).ToArray();
            return fallback switch
            {
                string => [StringTensor.FromStrings([.. mapped.Cast<string>()], shape).ToCarrier()],
                long => [Tensor.FromArray(mapped.Cast<long>().ToArray(), mapped.Length).Reshape(shape)],
                _ => [Tensor.FromArray(mapped.Cast<float>().ToArray(), mapped.Length).Reshape(shape)],
            };
        };
    }

    static string Key(object k) => k switch
    {
        string s => "s:" + s,
        long l => "i:" + l.ToString(CultureInfo.InvariantCulture),
        float f => "f:" + f.ToString("R", CultureInfo.InvariantCulture),
        _ => throw new InvalidOperationException(),
    };

    sealed class ByteComparer : IEqualityComparer<byte[]>
    {
        public static readonly ByteComparer Instance = new();
        public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(byte[] obj)
        {
            var h = new HashCode();
            h.AddBytes(obj);
            return h.ToHashCode();
        }
    }
}
