using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Proto;
using Xunit;

namespace Nabla.Onnx.Tests;

/// <summary>
/// RNN, GRU and LSTM against ONNX Runtime on what the backend cases leave out: reverse and bidirectional directions,
/// ragged sequence_lens, initial states, GRU's linear_before_reset and LSTM peepholes together. ONNX Runtime's CPU
/// kernels take layout 0 only; layout 1 is covered by the backend cases.
/// </summary>
public sealed class RecurrentCrossCheckTests
{
    const int Seq = 5, Batch = 3, In = 4, Hidden = 6;

    public static TheoryData<string, string, int> Cases()
    {
        var data = new TheoryData<string, string, int>();
        foreach (var dir in new[] { "forward", "reverse", "bidirectional" })
        {
            data.Add("RNN", dir, 0);
            data.Add("GRU", dir, 0);
            data.Add("GRU", dir, 1);
            data.Add("LSTM", dir, 0);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesOnnxRuntime(string op, string direction, int linearBeforeReset)
    {
        int gates = op switch { "RNN" => 1, "GRU" => 3, _ => 4 }, dirs = direction == "bidirectional" ? 2 : 1;
        var rng = new Random(op.Length * 7 + direction.Length + linearBeforeReset);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var inputs = new List<(string Name, int[] Shape, float[]? F, int[]? I)>
        {
            ("X", [Seq, Batch, In], Rand(Seq * Batch * In), null),
            ("W", [dirs, gates * Hidden, In], Rand(dirs * gates * Hidden * In), null),
            ("R", [dirs, gates * Hidden, Hidden], Rand(dirs * gates * Hidden * Hidden), null),
            ("B", [dirs, 2 * gates * Hidden], Rand(dirs * 2 * gates * Hidden), null),
            ("sequence_lens", [Batch], null, [Seq, 2, 4]),
            ("initial_h", [dirs, Batch, Hidden], Rand(dirs * Batch * Hidden), null),
        };
        if (op == "LSTM")
        {
            inputs.Add(("initial_c", [dirs, Batch, Hidden], Rand(dirs * Batch * Hidden), null));
            inputs.Add(("P", [dirs, 3 * Hidden], Rand(dirs * 3 * Hidden), null));
        }
        string[] outputs = op == "LSTM" ? ["Y", "Y_h", "Y_c"] : ["Y", "Y_h"];
        var bytes = Model(op, direction, linearBeforeReset, inputs.Select(i => (i.Name, i.Shape, i.I is null ? 1 : 6)).ToList(), outputs);

        var nabla = OnnxModel.Load(bytes).Run(inputs.Select(i => i.F is not null ? Tensor.FromArray(i.F, i.Shape) : Tensor.FromArray(i.I!, i.Shape)).ToArray());
        using var session = new InferenceSession(bytes);
        var feeds = inputs.Select(i => i.F is not null
            ? NamedOnnxValue.CreateFromTensor(i.Name, new DenseTensor<float>(i.F, i.Shape))
            : NamedOnnxValue.CreateFromTensor(i.Name, new DenseTensor<int>(i.I!, i.Shape))).ToList();
        using var ort = session.Run(feeds);
        for (int k = 0; k < outputs.Length; k++)
        {
            var expected = ort.First(r => r.Name == outputs[k]).AsTensor<float>();
            Assert.Equal(expected.Dimensions.ToArray(), nabla[k].Shape);
            var e = expected.ToArray();
            var a = nabla[k].ToArray<float>();
            for (int j = 0; j < a.Length; j++)
                Assert.True(Math.Abs(a[j] - e[j]) <= 1e-5, $"{op} {direction}: {outputs[k]}[{j}] is {a[j]}, ONNX Runtime {e[j]}");
        }
    }

    static byte[] Model(string op, string direction, int linearBeforeReset, List<(string Name, int[] Shape, int Type)> inputs, string[] outputs)
    {
        var g = new GraphProto { Name = "rnn" };
        var node = new NodeProto { OpType = op, Name = "cell" };
        foreach (var (name, shape, type) in inputs)
        {
            node.Input.Add(name);
            g.Input.Add(Value(name, type, shape));
        }
        foreach (var o in outputs)
        {
            node.Output.Add(o);
            g.Output.Add(new ValueInfoProto { Name = o, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        }
        node.Attribute.Add(new AttributeProto { Name = "hidden_size", Type = AttributeProto.Types.AttributeType.Int, I = Hidden });
        node.Attribute.Add(new AttributeProto { Name = "direction", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(direction) });
        if (op == "GRU")
            node.Attribute.Add(new AttributeProto { Name = "linear_before_reset", Type = AttributeProto.Types.AttributeType.Int, I = linearBeforeReset });
        g.Node.Add(node);
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 14 });
        return m.ToByteArray();
    }

    static ValueInfoProto Value(string name, int type, int[] shape)
    {
        var tt = new TypeProto.Types.Tensor { ElemType = type, Shape = new TensorShapeProto() };
        foreach (var d in shape) tt.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tt } };
    }
}
