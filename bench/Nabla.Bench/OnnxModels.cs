namespace Nabla.Bench;

/// <summary>
/// Builds tiny ONNX models in memory with a hand-written protobuf encoder, so the benchmark needs no Python
/// and commits no binary. Only the fields ONNX Runtime needs for a single-node graph are written.
/// </summary>
static class OnnxModels
{
    // ONNX TensorProto.DataType.FLOAT
    const int Float = 1;

    /// <summary>Y = MatMul(A, B) with static shapes a and b (numpy matmul semantics, batched when rank 3).</summary>
    public static byte[] MatMul(long[] a, long[] b, long[] y)
    {
        var node = new Pb().Str(1, "A").Str(1, "B").Str(2, "Y").Str(3, "matmul").Str(4, "MatMul");
        var graph = new Pb()
            .Msg(1, node)
            .Str(2, "bench_matmul")
            .Msg(11, ValueInfo("A", a))
            .Msg(11, ValueInfo("B", b))
            .Msg(12, ValueInfo("Y", y));
        var opset = new Pb().Str(1, "").Int(2, 13);
        return new Pb()
            .Int(1, 8)                     // ir_version
            .Str(2, "Nabla.Bench")         // producer_name
            .Msg(7, graph)
            .Msg(8, opset)
            .ToArray();
    }

    static Pb ValueInfo(string name, long[] shape)
    {
        var dims = new Pb();
        foreach (var d in shape) dims.Msg(1, new Pb().Int(1, d));   // TensorShapeProto.dim { dim_value }
        var tensorType = new Pb().Int(1, Float).Msg(2, dims);        // TypeProto.Tensor { elem_type, shape }
        var type = new Pb().Msg(1, tensorType);                      // TypeProto { tensor_type }
        return new Pb().Str(1, name).Msg(2, type);                   // ValueInfoProto { name, type }
    }

    /// <summary>Minimal protobuf writer: varint fields (wire type 0) and length-delimited fields (wire type 2).</summary>
    sealed class Pb
    {
        readonly List<byte> bytes = [];

        public Pb Int(int field, long value)
        {
            Varint((ulong)(field << 3));
            Varint((ulong)value);
            return this;
        }

        public Pb Str(int field, string value) => Bytes(field, System.Text.Encoding.UTF8.GetBytes(value));

        public Pb Msg(int field, Pb message) => Bytes(field, message.ToArray());

        Pb Bytes(int field, byte[] value)
        {
            Varint((ulong)((field << 3) | 2));
            Varint((ulong)value.Length);
            bytes.AddRange(value);
            return this;
        }

        void Varint(ulong v)
        {
            while (v >= 0x80)
            {
                bytes.Add((byte)(v | 0x80));
                v >>= 7;
            }
            bytes.Add((byte)v);
        }

        public byte[] ToArray() => [.. bytes];
    }
}
