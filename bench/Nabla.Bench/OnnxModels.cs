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

    /// <summary>
    /// Y = Gemm(A, W, C) with transB = 1: A [m, k] is the input, the weight W [n, k] and the bias C [n] are initializers
    /// (a linear layer as PyTorch exports it), filled from <paramref name="seed"/>.
    /// </summary>
    public static byte[] Linear(int m, int k, int n, int seed)
    {
        var rng = new Random(seed);
        var node = new Pb().Str(1, "A").Str(1, "W").Str(1, "C").Str(2, "Y").Str(3, "linear").Str(4, "Gemm")
            .Msg(5, new Pb().Str(1, "transB").Int(3, 1).Int(20, 2));   // AttributeProto { name, i, type = INT }
        var graph = new Pb()
            .Msg(1, node)
            .Str(2, "bench_linear")
            .Msg(5, Initializer("W", [n, k], rng))
            .Msg(5, Initializer("C", [n], rng))
            .Msg(11, ValueInfo("A", [m, k]))
            .Msg(12, ValueInfo("Y", [m, n]));
        var opset = new Pb().Str(1, "").Int(2, 13);
        return new Pb().Int(1, 8).Str(2, "Nabla.Bench").Msg(7, graph).Msg(8, opset).ToArray();
    }

    /// <summary>
    /// Y = Add(MatMul(A, W), C): A [batch, rows, k] is the input, W [k, n] and the bias C [n] are initializers (nn.Linear
    /// as PyTorch exports it for a 3-D input).
    /// </summary>
    public static byte[] LinearMatMul(int batch, int rows, int k, int n, int seed)
    {
        var rng = new Random(seed);
        var matmul = new Pb().Str(1, "A").Str(1, "W").Str(2, "P").Str(3, "matmul").Str(4, "MatMul");
        var add = new Pb().Str(1, "P").Str(1, "C").Str(2, "Y").Str(3, "bias").Str(4, "Add");
        var graph = new Pb()
            .Msg(1, matmul)
            .Msg(1, add)
            .Str(2, "bench_linear_matmul")
            .Msg(5, Initializer("W", [k, n], rng))
            .Msg(5, Initializer("C", [n], rng))
            .Msg(11, ValueInfo("A", [batch, rows, k]))
            .Msg(12, ValueInfo("Y", [batch, rows, n]));
        var opset = new Pb().Str(1, "").Int(2, 13);
        return new Pb().Int(1, 8).Str(2, "Nabla.Bench").Msg(7, graph).Msg(8, opset).ToArray();
    }

    /// <summary>TensorProto { dims, data_type = FLOAT, name, raw_data } with values uniform in [-0.05, 0.05).</summary>
    static Pb Initializer(string name, long[] shape, Random rng)
    {
        long count = shape.Aggregate(1L, (a, d) => a * d);
        var raw = new byte[count * 4];
        for (long i = 0; i < count; i++)
            BitConverter.TryWriteBytes(raw.AsSpan((int)(i * 4)), (float)(rng.NextDouble() * 0.1 - 0.05));
        var t = new Pb();
        foreach (var d in shape) t.Int(1, d);
        return t.Int(2, Float).Str(8, name).Raw(9, raw);
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

        public Pb Raw(int field, byte[] value) => Bytes(field, value);

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
