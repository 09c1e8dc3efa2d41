using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>Checkpoints written by other projects (candle, mlverse/torch, TorchSharp.PyBridge).</summary>
public class ThirdPartyCheckpointTests
{
    [Fact]
    public void CandleTestPt()
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("candle-core-tests", "test.pt"));
        var t = Assert.Single(sd).Value;
        Assert.Equal("test", sd.Keys.Single());
        Assert.Equal(DType.Int64, t.DType);
        Assert.Equal([2, 4], t.Shape);
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7, 8], t.ToArray<long>());
    }

    [Fact]
    public void CandleTestWithKeyFindsModelStateDict()
    {
        var path = Fixtures.Path_("candle-core-tests", "test_with_key.pt");
        var found = PyTorchCheckpoint.LoadStateDict(path);
        var byKey = PyTorchCheckpoint.LoadStateDict(path, "model_state_dict");
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7, 8], found["test"].ToArray<long>());
        Assert.Equal(found["test"].ToArray<long>(), byKey["test"].ToArray<long>());
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(path));
        Assert.True(root.ContainsKey("model_state_dict"));
    }

    [Fact]
    public void CandleMissingKeyNamesTheKeys()
    {
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("candle-core-tests", "test_with_key.pt"), "nope"));
        Assert.Contains("'nope'", e.Message);
        Assert.Contains("model_state_dict", e.Message);
    }

    [Fact]
    public void CandleFortranOrderTensorIsMaterializedRowMajor()
    {
        var t = PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("candle-core-tests", "fortran_tensor_3d.pth"))["tensor_fortran"];
        Assert.Equal([2, 3, 4], t.Shape);
        Assert.Equal(Enumerable.Range(1, 24).Select(i => (long)i), t.ToArray<long>());
    }

    [Fact]
    public void MlverseStateDicts()
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("mlverse-torch-assets", "state_dict.pth"));
        Assert.Equal([3, 5], sd["ones"].Shape);
        Assert.All(sd["ones"].ToArray<float>(), v => Assert.Equal(1f, v));
        Assert.All(sd["twos"].ToArray<float>(), v => Assert.Equal(2f, v));
        var od = PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("mlverse-torch-assets", "ordered_dict.pt"));
        Assert.Equal(["weight", "bias"], od.Keys);
        Assert.Equal([10, 10], od["weight"].Shape);
        Assert.Equal([10], od["bias"].Shape);
    }

    [Fact]
    public void MlverseTorchScriptIsRefusedClearly()
    {
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.Load(Fixtures.Path_("mlverse-torch-assets", "linear.pt")));
        Assert.Contains("TorchScript is not supported", e.Message);
        Assert.Contains("linear.pt", e.Message);
    }

    [Fact]
    public void PyBridgeModuleLoadForwardGivesFiveFive()
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("torchsharp-pybridge-tests", "pickled_modules", "module_load.pth"));
        Assert.Equal([1, 5], sd["lin1.weight"].Shape);
        Assert.Equal([2, 1], sd["lin2.weight"].Shape);
        var lin1 = new Nabla.NN.Linear(5, 1, bias: false);
        var lin2 = new Nabla.NN.Linear(1, 2, bias: false);
        var net = new Nabla.NN.Sequential(lin1, lin2);
        net.LoadStateDict(new Dictionary<string, Tensor> { ["0.weight"] = sd["lin1.weight"], ["1.weight"] = sd["lin2.weight"] });
        var y = net.Forward(Tensor.Ones(5));
        Assert.Equal([5f, 5f], y.ToArray<float>());
    }

    [Fact]
    public void PyBridgeTensors()
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Path_("torchsharp-pybridge-tests", "pickled_tensors", "tensors.pth"));
        Assert.Equal([1L, 2, 3, 4, 5, 6], sd["arr"].ToArray<long>());
        Assert.Equal([6], sd["arr"].Shape);
        Assert.Equal([2, 3], sd["arr_2d"].Shape);
        Assert.Equal([1L, 2, 3, 4, 5, 6], sd["arr_2d"].ToArray<long>());
        // The same tensors as the safetensors file next to it.
        Fixtures.AssertSameTensors(Nabla.IO.SafeTensors.Load(Fixtures.Path_("torchsharp-pybridge-tests", "pickled_tensors", "tensors.safetensors")), sd);
    }

    public static TheoryData<string> OptimizerFiles() =>
        new(Directory.GetFiles(Fixtures.Path_("torchsharp-pybridge-tests", "pickled_optimizers")).Select(Path.GetFileName).Order().Select(f => f!));

    [Theory]
    [MemberData(nameof(OptimizerFiles))]
    public void PyBridgeOptimizerStateDictsLoad(string file)
    {
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(Fixtures.Path_("torchsharp-pybridge-tests", "pickled_optimizers", file)));
        var state = Assert.IsType<PyDict>(root["state"]);
        var groups = Assert.IsType<PyList>(root["param_groups"]);
        Assert.NotEmpty(groups);
        var allParams = new List<long>();
        foreach (var g in groups)
        {
            var group = Assert.IsType<PyDict>(g);
            Assert.IsType<double>(group["lr"]);
            allParams.AddRange(Assert.IsType<PyList>(group["params"]).Cast<long>());
        }
        foreach (var (k, v) in state)
        {
            Assert.Contains(Assert.IsType<long>(k), allParams);
            Assert.All(Assert.IsType<PyDict>(v), kv => Assert.True(kv.Value is Tensor or double or long, $"{file}: {kv.Key} is {kv.Value?.GetType().Name}"));
        }
    }

    [Fact]
    public void PyBridgeAdamHasExpectedStructure()
    {
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(Fixtures.Path_("torchsharp-pybridge-tests", "pickled_optimizers", "adam_load.pth")));
        var groups = Assert.IsType<PyList>(root["param_groups"]);
        var g0 = Assert.IsType<PyDict>(groups[0]);
        Assert.Equal(0.001, g0["lr"]);
        var betas = Assert.IsType<PyTuple>(g0["betas"]);
        Assert.Equal(0.8, betas[0]);
        Assert.Equal(0.9, betas[1]);
        Assert.Equal(false, g0["amsgrad"]);
        Assert.Null(g0["foreach"]);
        var state = Assert.IsType<PyDict>(root["state"]);
        Assert.Equal([0L, 1L, 2L, 3L], state.Keys.Cast<long>());
        var s2 = Assert.IsType<PyDict>(state[2L]);
        Assert.Equal([10, 10], Assert.IsType<Tensor>(s2["max_exp_avg_sq"]).Shape);
        var step = Assert.IsType<Tensor>(s2["step"]);
        Assert.Empty(step.Shape);
        Assert.Equal(1.0, step.Item());
    }
}
