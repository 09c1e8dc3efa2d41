using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Nabla.Interop.Onnx;
using Nabla.Serving.Grpc;

namespace Nabla.Serving;

/// <summary>
/// Tensors in and out of the protocol's three encodings: JSON arrays, raw little-endian bytes, and gRPC typed contents.
/// Every decoder checks the element count against the shape before it allocates.
/// </summary>
internal static class TensorCodec
{
    /// <summary>The request shape as Nabla dims: every dim ≥ 0 and the element count within one array.</summary>
    public static int[] CheckShape(IReadOnlyList<long> shape, string what)
    {
        var dims = new int[shape.Count];
        long n = 1;
        bool empty = false;
        for (int i = 0; i < dims.Length; i++)
        {
            long d = shape[i];
            if (d < 0) throw ServingException.Invalid($"{what}: shape [{string.Join(", ", shape)}] has a negative dimension");
            if (d > int.MaxValue) throw ServingException.Invalid($"{what}: dimension {d} of shape [{string.Join(", ", shape)}] is too large");
            dims[i] = (int)d;
            if (d == 0) empty = true;
        }
        if (!empty)
        {
            foreach (var d in dims)
            {
                n *= d;
                if (n > Array.MaxLength) throw ServingException.Invalid($"{what}: shape [{string.Join(", ", shape)}] has more elements than a tensor can hold");
            }
        }
        return dims;
    }

    public static long Numel(int[] dims)
    {
        long n = 1;
        foreach (var d in dims) n *= d;
        return n;
    }

    /// <summary>A tensor over <paramref name="data"/>, an array the decoder just made (shared, not copied again).</summary>
    static Tensor Make<T>(T[] data, int[] shape) =>
        shape.Length == 0 ? Tensor.AsTensor(data, 1).Reshape([]) : Tensor.AsTensor(data, shape);

    // ---- raw bytes ----

    /// <summary>The wire's dtype; BYTES has none (its tensors are <see cref="StringTensor"/> carriers).</summary>
    static DType DTypeOf(string datatype) => WireTypes.ToDType(datatype) ?? throw new InvalidOperationException($"no Nabla dtype for {datatype}");

    public static Tensor FromRaw(ReadOnlySpan<byte> bytes, string datatype, int[] shape, string what)
    {
        if (datatype == WireTypes.Bytes) return FromLengthPrefixed(bytes, shape, what).ToCarrier();
        var dtype = DTypeOf(datatype);
        long n = Numel(shape);
        long expected = n * dtype.ElementSize();
        if (bytes.Length != expected)
            throw ServingException.Invalid($"{what}: {bytes.Length} bytes of data, but shape [{string.Join(", ", shape)}] of {datatype} needs {expected}");
        // One copy, into memory that disposing the tensor recycles.
        return Tensor.FromBytes(bytes, dtype, shape);
    }

    /// <summary>
    /// BYTES in raw form: each element is a 4-byte little-endian length followed by that many bytes. The element count
    /// is checked against the shape before any element is copied, and every length against the bytes left.
    /// </summary>
    public static StringTensor FromLengthPrefixed(ReadOnlySpan<byte> bytes, int[] shape, string what)
    {
        long n = Numel(shape);
        if (n * 4 > bytes.Length)
            throw ServingException.Invalid($"{what}: {bytes.Length} bytes of BYTES data cannot hold the {n} length-prefixed elements of shape [{string.Join(", ", shape)}] (4 bytes of length each at least)");
        var data = new byte[n][];
        int pos = 0;
        for (int i = 0; i < data.Length; i++)
        {
            if (bytes.Length - pos < 4)
                throw ServingException.Invalid($"{what}: BYTES data ends inside the length of element {i} (shape [{string.Join(", ", shape)}] needs {n} elements)");
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(bytes[pos..]);
            pos += 4;
            if (len > (uint)(bytes.Length - pos))
                throw ServingException.Invalid($"{what}: BYTES element {i} claims {len} bytes, but only {bytes.Length - pos} are left");
            data[i] = bytes.Slice(pos, (int)len).ToArray();
            pos += (int)len;
        }
        if (pos != bytes.Length)
            throw ServingException.Invalid($"{what}: {bytes.Length - pos} bytes left over after the {n} BYTES elements of shape [{string.Join(", ", shape)}]");
        return new StringTensor(data, shape);
    }

    public static byte[] ToLengthPrefixed(StringTensor s)
    {
        long total = 0;
        foreach (var e in s.Data) total += 4 + e.Length;
        if (total > Array.MaxLength) throw new ServingException(ServingErrorKind.Internal, $"a BYTES output of {total} bytes is too large to send");
        var r = GC.AllocateUninitializedArray<byte>((int)total);
        int pos = 0;
        foreach (var e in s.Data)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(pos), (uint)e.Length);
            e.CopyTo(r, pos + 4);
            pos += 4 + e.Length;
        }
        return r;
    }

    public static byte[] ToRaw(Tensor t) => StringTensor.FromCarrier(t) is { } s ? ToLengthPrefixed(s) : t.ToBytes();

    // ---- JSON ----

    /// <summary>Decodes nested or flat JSON <paramref name="data"/>; the leaves are counted before anything is allocated.</summary>
    public static Tensor FromJson(JsonElement data, string datatype, int[] shape, string what)
    {
        long n = Numel(shape);
        if (datatype == "FP32" && FlatFloats(data, n) is { } floats) return Make(floats, shape);
        long count = CountLeaves(data, what);
        if (count != n)
            throw ServingException.Invalid($"{what}: {count} data elements, but shape [{string.Join(", ", shape)}] has {n}");
        var leaves = new List<JsonElement>((int)count);
        Flatten(data, leaves);
        // NOTE: BYTES elements in JSON are strings, sent as their UTF-8 bytes (the protocol's JSON form has no other).
        if (datatype == WireTypes.Bytes)
            return new StringTensor(Convert(leaves, what, "a string", e => e.ValueKind == JsonValueKind.String ? Encoding.UTF8.GetBytes(e.GetString()!) : throw Bad()), shape).ToCarrier();
        return DTypeOf(datatype) switch
        {
            DType.Bool => Make(Convert(leaves, what, "a boolean", ReadBool), shape),
            DType.UInt8 => Make(Convert(leaves, what, "an integer in [0, 255]", e => e.TryGetByte(out var v) ? v : throw Bad()), shape),
            DType.Int8 => Make(Convert(leaves, what, "an integer in [-128, 127]", e => e.TryGetSByte(out var v) ? v : throw Bad()), shape),
            DType.Int32 => Make(Convert(leaves, what, "a 32-bit integer", e => e.TryGetInt32(out var v) ? v : throw Bad()), shape),
            DType.Int64 => Make(Convert(leaves, what, "a 64-bit integer", e => e.TryGetInt64(out var v) ? v : throw Bad()), shape),
            DType.Float16 => Make(Convert(leaves, what, "a number", e => (Half)ReadDouble(e)), shape),
            DType.BFloat16 => Make(Convert(leaves, what, "a number", e => (BFloat16)(float)ReadDouble(e)), shape),
            DType.Float32 => Make(Convert(leaves, what, "a number", e => (float)ReadDouble(e)), shape),
            DType.Float64 => Make(Convert(leaves, what, "a number", ReadDouble), shape),
            DType.Int16 => Make(Convert(leaves, what, "an integer in [-32768, 32767]", e => e.TryGetInt16(out var v) ? v : throw Bad()), shape),
            DType.UInt16 => Make(Convert(leaves, what, "an integer in [0, 65535]", e => e.TryGetUInt16(out var v) ? v : throw Bad()), shape),
            DType.UInt32 => Make(Convert(leaves, what, "an integer in [0, 4294967295]", e => e.TryGetUInt32(out var v) ? v : throw Bad()), shape),
            DType.UInt64 => Make(Convert(leaves, what, "an integer in [0, 18446744073709551615]", e => e.TryGetUInt64(out var v) ? v : throw Bad()), shape),
            _ => throw new InvalidOperationException($"no JSON decoding for {datatype}"),
        };
    }

    /// <summary>
    /// The fast path for the most common request: a flat array of exactly <paramref name="n"/> JSON numbers for FP32.
    /// Null when the data is anything else (nested, strings, wrong count); the general path then decides and explains.
    /// </summary>
    static float[]? FlatFloats(JsonElement data, long n)
    {
        if (data.ValueKind != JsonValueKind.Array || data.GetArrayLength() != n) return null;
        var r = GC.AllocateUninitializedArray<float>((int)n);
        int i = 0;
        foreach (var e in data.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out var d)) return null;
            r[i++] = (float)d;
        }
        return r;
    }

    static FormatException Bad() => new();

    static bool ReadBool(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Number when e.TryGetInt32(out var i) && i is 0 or 1 => i == 1,
        _ => throw Bad(),
    };

    /// <summary>A JSON number, or one of the strings "NaN", "Infinity", "-Infinity" (JSON has no tokens for them).</summary>
    static double ReadDouble(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out var d)) return d;
        if (e.ValueKind == JsonValueKind.String)
        {
            switch (e.GetString())
            {
                case "NaN": return double.NaN;
                case "Infinity": return double.PositiveInfinity;
                case "-Infinity": return double.NegativeInfinity;
            }
        }
        throw Bad();
    }

    static T[] Convert<T>(List<JsonElement> leaves, string what, string expected, Func<JsonElement, T> read)
    {
        var r = new T[leaves.Count];
        for (int i = 0; i < r.Length; i++)
        {
            try { r[i] = read(leaves[i]); }
            catch (Exception e) when (e is FormatException or InvalidOperationException)
            {
                throw ServingException.Invalid($"{what}: data element {i} ({Describe(leaves[i])}) is not {expected}");
            }
        }
        return r;
    }

    static string Describe(JsonElement e)
    {
        var raw = e.GetRawText();
        return raw.Length <= 32 ? raw : raw[..32] + "...";
    }

    static long CountLeaves(JsonElement e, string what)
    {
        if (e.ValueKind != JsonValueKind.Array)
        {
            if (e.ValueKind is JsonValueKind.Object or JsonValueKind.Null or JsonValueKind.Undefined)
                throw ServingException.Invalid($"{what}: data must be an array of values, found {e.ValueKind.ToString().ToLowerInvariant()}");
            return 1;
        }
        long n = 0;
        foreach (var item in e.EnumerateArray()) n += CountLeaves(item, what);
        return n;
    }

    static void Flatten(JsonElement e, List<JsonElement> into)
    {
        if (e.ValueKind != JsonValueKind.Array) { into.Add(e); return; }
        foreach (var item in e.EnumerateArray()) Flatten(item, into);
    }

    /// <summary>Writes the elements as one flat JSON array; NaN and infinities become the strings "NaN", "Infinity", "-Infinity".</summary>
    public static void WriteJson(Utf8JsonWriter w, Tensor t, string what)
    {
        w.WriteStartArray();
        if (StringTensor.FromCarrier(t) is { } s)
        {
            for (int i = 0; i < s.Count; i++)
            {
                if (!System.Text.Unicode.Utf8.IsValid(s.Data[i]))
                    throw ServingException.Invalid($"{what}: BYTES element {i} is not UTF-8 text, so JSON cannot carry it; request it with binary_data");
                w.WriteStringValue(s.Data[i]);
            }
            w.WriteEndArray();
            return;
        }
        switch (t.DType)
        {
            case DType.Bool: foreach (var v in t.ToArray<bool>()) w.WriteBooleanValue(v); break;
            case DType.UInt8: foreach (var v in t.ToArray<byte>()) w.WriteNumberValue(v); break;
            case DType.Int8: foreach (var v in t.ToArray<sbyte>()) w.WriteNumberValue(v); break;
            case DType.Int32: foreach (var v in t.ToArray<int>()) w.WriteNumberValue(v); break;
            case DType.Int64: foreach (var v in t.ToArray<long>()) w.WriteNumberValue(v); break;
            case DType.Float16: foreach (var v in t.ToArray<Half>()) WriteFloat(w, (float)v); break;
            case DType.BFloat16: foreach (var v in t.ToArray<BFloat16>()) WriteFloat(w, (float)v); break;
            case DType.Float32: foreach (var v in t.ToArray<float>()) WriteFloat(w, v); break;
            case DType.Float64: foreach (var v in t.ToArray<double>()) WriteDouble(w, v); break;
            case DType.Int16: foreach (var v in t.ToArray<short>()) w.WriteNumberValue(v); break;
            case DType.UInt16: foreach (var v in t.ToArray<ushort>()) w.WriteNumberValue(v); break;
            case DType.UInt32: foreach (var v in t.ToArray<uint>()) w.WriteNumberValue(v); break;
            case DType.UInt64: foreach (var v in t.ToArray<ulong>()) w.WriteNumberValue(v); break;
            default: throw new InvalidOperationException($"no JSON encoding for {t.DType}");
        }
        w.WriteEndArray();
    }

    static void WriteFloat(Utf8JsonWriter w, float v)
    {
        if (float.IsFinite(v)) w.WriteNumberValue(v);
        else w.WriteStringValue(float.IsNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
    }

    static void WriteDouble(Utf8JsonWriter w, double v)
    {
        if (double.IsFinite(v)) w.WriteNumberValue(v);
        else w.WriteStringValue(double.IsNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
    }

    // ---- gRPC typed contents ----

    /// <summary>Decodes <see cref="InferTensorContents"/>: exactly the field the datatype calls for may be filled.</summary>
    public static Tensor FromContents(InferTensorContents c, string datatype, int[] shape, string what)
    {
        long n = Numel(shape);
        bool bytes = datatype == WireTypes.Bytes;
        var dtype = bytes ? DType.UInt8 : DTypeOf(datatype);
        string field = bytes ? "bytes_contents" : dtype switch
        {
            DType.Bool => "bool_contents",
            DType.UInt8 or DType.UInt16 or DType.UInt32 => "uint_contents",
            DType.Int8 or DType.Int16 or DType.Int32 => "int_contents",
            DType.Int64 => "int64_contents",
            DType.UInt64 => "uint64_contents",
            DType.Float32 => "fp32_contents",
            DType.Float64 => "fp64_contents",
            _ => throw ServingException.Invalid($"{what}: {datatype} data must be sent in raw_input_contents"),
        };
        var filled = new List<(string name, int count)>();
        if (c.BoolContents.Count > 0) filled.Add(("bool_contents", c.BoolContents.Count));
        if (c.IntContents.Count > 0) filled.Add(("int_contents", c.IntContents.Count));
        if (c.Int64Contents.Count > 0) filled.Add(("int64_contents", c.Int64Contents.Count));
        if (c.UintContents.Count > 0) filled.Add(("uint_contents", c.UintContents.Count));
        if (c.Uint64Contents.Count > 0) filled.Add(("uint64_contents", c.Uint64Contents.Count));
        if (c.Fp32Contents.Count > 0) filled.Add(("fp32_contents", c.Fp32Contents.Count));
        if (c.Fp64Contents.Count > 0) filled.Add(("fp64_contents", c.Fp64Contents.Count));
        if (c.BytesContents.Count > 0) filled.Add(("bytes_contents", c.BytesContents.Count));
        foreach (var (name, _) in filled)
            if (name != field) throw ServingException.Invalid($"{what}: {datatype} data belongs in {field}, but {name} is filled");
        int count = filled.Count == 0 ? 0 : filled[0].count;
        if (count != n) throw ServingException.Invalid($"{what}: {count} elements in {field}, but shape [{string.Join(", ", shape)}] has {n}");
        if (bytes) return new StringTensor([.. c.BytesContents.Select(b => b.ToByteArray())], shape).ToCarrier();
        return dtype switch
        {
            DType.Bool => Make(c.BoolContents.ToArray(), shape),
            DType.UInt8 => Make(Narrow(c.UintContents, what, v => v <= byte.MaxValue, v => (byte)v), shape),
            DType.Int8 => Make(Narrow(c.IntContents, what, v => v is >= sbyte.MinValue and <= sbyte.MaxValue, v => (sbyte)v), shape),
            DType.Int32 => Make(c.IntContents.ToArray(), shape),
            DType.Int64 => Make(c.Int64Contents.ToArray(), shape),
            DType.Float32 => Make(c.Fp32Contents.ToArray(), shape),
            DType.Float64 => Make(c.Fp64Contents.ToArray(), shape),
            DType.Int16 => Make(Narrow(c.IntContents, what, v => v is >= short.MinValue and <= short.MaxValue, v => (short)v), shape),
            DType.UInt16 => Make(Narrow(c.UintContents, what, v => v <= ushort.MaxValue, v => (ushort)v), shape),
            DType.UInt32 => Make(c.UintContents.ToArray(), shape),
            DType.UInt64 => Make(c.Uint64Contents.ToArray(), shape),
            _ => throw new InvalidOperationException($"no typed contents for {datatype}"),
        };
    }

    static TOut[] Narrow<TIn, TOut>(IList<TIn> src, string what, Func<TIn, bool> fits, Func<TIn, TOut> cast)
    {
        var r = new TOut[src.Count];
        for (int i = 0; i < r.Length; i++)
        {
            if (!fits(src[i])) throw ServingException.Invalid($"{what}: element {i} ({src[i]}) is out of range for the datatype");
            r[i] = cast(src[i]);
        }
        return r;
    }
}
