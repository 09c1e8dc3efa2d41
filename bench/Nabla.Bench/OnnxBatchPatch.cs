namespace Nabla.Bench;

/// <summary>
/// Makes a model's batch dimension dynamic without an ONNX library: rewrites, at the protobuf wire level, dim 0 of
/// the named graph input and of every graph output to dim_param "N", and drops graph.value_info (intermediate
/// shapes recorded for batch 1). Everything else is copied byte for byte.
/// </summary>
static class OnnxBatchPatch
{
    // ModelProto.graph = 7; GraphProto.input = 11, output = 12, value_info = 13; ValueInfoProto.name = 1, type = 2;
    // TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2; TensorShapeProto.dim = 1; Dimension.dim_param = 2.
    public static byte[] DynamicBatch(byte[] model, string inputName) =>
        Rewrite(model, (f, payload) => f == 7 ? Rewrite(payload, (g, v) => g switch
        {
            11 when Name(v) == inputName => PatchValueInfo(v),
            12 => PatchValueInfo(v),
            13 => null,
            _ => v,
        }) : payload);

    static byte[] PatchValueInfo(byte[] vi) =>
        Rewrite(vi, (f, v) => f != 2 ? v : Rewrite(v, (t, tt) => t != 1 ? tt : Rewrite(tt, (s, shape) => s != 2 ? shape : PatchFirstDim(shape))));

    static byte[] PatchFirstDim(byte[] shape)
    {
        bool done = false;
        return Rewrite(shape, (f, dim) =>
        {
            if (f != 1 || done) return dim;
            done = true;
            return [0x12, 1, (byte)'N']; // Dimension { dim_param = "N" }
        });
    }

    static string? Name(byte[] valueInfo)
    {
        string? name = null;
        Rewrite(valueInfo, (f, v) => { if (f == 1) name = System.Text.Encoding.UTF8.GetString(v); return v; });
        return name;
    }

    /// <summary>
    /// Copies a message, passing each length-delimited field's payload through <paramref name="edit"/> (null drops the
    /// field); other wire types are copied unchanged.
    /// </summary>
    static byte[] Rewrite(byte[] msg, Func<int, byte[], byte[]?> edit)
    {
        var o = new List<byte>(msg.Length);
        int p = 0;
        while (p < msg.Length)
        {
            int start = p;
            ulong key = Varint(msg, ref p);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: Varint(msg, ref p); break;
                case 1: p += 8; break;
                case 5: p += 4; break;
                case 2:
                {
                    int len = checked((int)Varint(msg, ref p));
                    var payload = msg.AsSpan(p, len).ToArray();
                    p += len;
                    var edited = edit(field, payload);
                    if (edited is null) continue;
                    WriteVarint(o, key);
                    WriteVarint(o, (ulong)edited.Length);
                    o.AddRange(edited);
                    continue;
                }
                default: throw new InvalidDataException($"protobuf wire type {wire} is not supported");
            }
            o.AddRange(msg.AsSpan(start, p - start).ToArray());
        }
        return [.. o];
    }

    static ulong Varint(byte[] b, ref int p)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte x = b[p++];
            v |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return v;
        }
    }

    static void WriteVarint(List<byte> o, ulong v)
    {
        while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; }
        o.Add((byte)v);
    }
}
