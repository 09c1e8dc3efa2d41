using Nabla.Graph;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Proto;
using Google.Protobuf;
using Xunit;

namespace Nabla.Onnx.Tests;

public sealed class OnnxImportTests
{
    static string? Mnist => ConformanceRunner.DataRoot is { } root && File.Exists(Path.Combine(root, "models", "mnist-8", "model.onnx"))
        ? Path.Combine(root, "models", "mnist-8") : null;

    [Fact]
    public void Mnist8GivesItsExpectedOutput()
    {
        if (Mnist is not { } dir) return;
        var model = OnnxModel.Load(Path.Combine(dir, "model.onnx"));
        var x = OnnxModel.ReadTensor(Path.Combine(dir, "test_data_set_0", "input_0.pb"));
        var expected = OnnxModel.ReadTensor(Path.Combine(dir, "test_data_set_0", "output_0.pb"));
        var y = model.Run(x);
        Assert.Null(ConformanceRunner.Compare(y, [expected]));
        Assert.Equal(expected.Argmax().Item(), y[0].Argmax().Item());
    }

    static byte[] TinyModel(Action<GraphProto>? edit = null)
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        g.Output.Add(new ValueInfoProto { Name = "y" });
        var w = new TensorProto { Name = "w", DataType = 1 };
        w.Dims.Add(2);
        w.FloatData.Add(2f);
        w.FloatData.Add(3f);
        g.Initializer.Add(w);
        var n1 = new NodeProto { OpType = "Mul", Name = "mul" };
        n1.Input.Add("x"); n1.Input.Add("w"); n1.Output.Add("t");
        var n2 = new NodeProto { OpType = "Relu", Name = "relu" };
        n2.Input.Add("t"); n2.Output.Add("y");
        g.Node.Add(n2); // out of order on purpose: the executor sorts
        g.Node.Add(n1);
        edit?.Invoke(g);
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        return m.ToByteArray();
    }

    [Fact]
    public void RunsNodesInTopologicalOrderWithFloatData()
    {
        var model = OnnxModel.Load(TinyModel());
        var y = model.Run(Tensor.FromArray([1f, -1f], 2))[0];
        Assert.Equal([2f, 0f], y.ToArray<float>());
    }

    [Fact]
    public void TruncatedAndMutatedFilesThrowModelFormatException()
    {
        var bytes = TinyModel();
        for (int cut = 1; cut < bytes.Length; cut += 3)
            AssertCleanFailure(bytes[..cut]);
        var rng = new Random(1);
        for (int trial = 0; trial < 300; trial++)
        {
            var m = (byte[])bytes.Clone();
            for (int k = 0; k < 3; k++) m[rng.Next(m.Length)] = (byte)rng.Next(256);
            AssertCleanFailure(m);
        }
    }

    static void AssertCleanFailure(byte[] bytes)
    {
        try
        {
            var model = OnnxModel.Load(bytes);
            model.Run(Tensor.FromArray([1f, -1f], 2));
        }
        catch (NablaException) { }
    }

    [Fact]
    public void MissingInitializerIsReported()
    {
        var e = Assert.Throws<ModelFormatException>(() => OnnxModel.Load(TinyModel(g => g.Initializer.Clear())));
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void CycleIsReported()
    {
        var e = Assert.Throws<ModelFormatException>(() => OnnxModel.Load(TinyModel(g => g.Node[1].Input[0] = "y")));
        Assert.Contains("cycle", e.Message);
    }

    [Fact]
    public void UnsupportedOperatorNamesNodeOperatorAndOpset()
    {
        var e = Assert.Throws<ModelFormatException>(() => OnnxModel.Load(TinyModel(g => g.Node[0].OpType = "FancyOp")));
        Assert.Contains("relu", e.Message);
        Assert.Contains("FancyOp", e.Message);
        Assert.Contains("13", e.Message);
    }

    [Fact]
    public void ExternalDataOutsideTheModelFolderIsRejected()
    {
        var bytes = TinyModel(g =>
        {
            var w = g.Initializer[0];
            w.FloatData.Clear();
            w.DataLocation = TensorProto.Types.DataLocation.External;
            w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "../secret.bin" });
        });
        Assert.Throws<ModelFormatException>(() => OnnxModel.Load(bytes, Path.GetTempPath()));
    }

    [Fact]
    public void ExternalDataIsReadFromAFileNextToTheModel()
    {
        var dir = Directory.CreateTempSubdirectory("nabla-onnx").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "w.bin"), [0, 0, 0, 0, .. BitConverter.GetBytes(2f), .. BitConverter.GetBytes(3f)]);
            var bytes = TinyModel(g =>
            {
                var w = g.Initializer[0];
                w.FloatData.Clear();
                w.DataLocation = TensorProto.Types.DataLocation.External;
                w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "w.bin" });
                w.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "4" });
                w.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "8" });
            });
            File.WriteAllBytes(Path.Combine(dir, "model.onnx"), bytes);
            var y = OnnxModel.Load(Path.Combine(dir, "model.onnx")).Run(Tensor.FromArray([1f, 1f], 2))[0];
            Assert.Equal([2f, 3f], y.ToArray<float>());
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>External data read straight into the tensor: values of a non-float type land as written, and a file too
    /// short for the shape is a ModelFormatException naming the file, not a short tensor.</summary>
    [Fact]
    public void ExternalDataOfAnyTypeAndAFileTooShort()
    {
        var dir = Directory.CreateTempSubdirectory("nabla-onnx").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "w.bin"), [.. BitConverter.GetBytes(7L), .. BitConverter.GetBytes(-3L)]);
            byte[] Model(string location, long dims) => TinyModel(g =>
            {
                var w = g.Initializer[0];
                w.FloatData.Clear();
                w.DataType = 7;   // INT64
                w.Dims[0] = dims;
                w.DataLocation = TensorProto.Types.DataLocation.External;
                w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
            });
            File.WriteAllBytes(Path.Combine(dir, "model.onnx"), Model("w.bin", 2));
            var model = OnnxModel.Load(Path.Combine(dir, "model.onnx"), fuse: false);
            Assert.Equal([7L, -3L], model.Graph.Initializers["w"].ToArray<long>());
            File.WriteAllBytes(Path.Combine(dir, "model.onnx"), Model("w.bin", 3));
            var e = Assert.Throws<ModelFormatException>(() => OnnxModel.Load(Path.Combine(dir, "model.onnx")));
            Assert.Contains("external file 'w.bin' has 16 bytes, need 24", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ExecutorFreesIntermediatesAndKeepsOutputs()
    {
        var g = new Graph.Graph { Name = "g", Inputs = [new ValueInfo("x", DType.Float32, null)], Outputs = [new ValueInfo("z", DType.Float32, null)] };
        g.Nodes.Add(new Node { OpType = "Relu", Inputs = ["x"], Outputs = ["t"] });
        g.Nodes.Add(new Node { OpType = "Neg", Inputs = ["t"], Outputs = ["z"] });
        g.Opsets[""] = 13;
        var exec = new GraphExecutor(g, Interop.Onnx.OnnxOps.Resolver);
        var z = exec.Run(Tensor.FromArray([1f, -2f], 2))[0];
        Assert.Equal([-1f, 0f], z.ToArray<float>());
    }
}
