using System.Numerics;
using System.Text.Json;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>Checkpoints written by torch 1.13 (tools/fixtures/make_pytorch_checkpoints.py), compared byte for byte.</summary>
public class GeneratedCheckpointTests
{
    [Theory]
    [InlineData("dtypes", "dtypes.pt")]
    [InlineData("strided", "strided.pt")]
    [InlineData("legacy_dtypes", "legacy_dtypes.pt")]
    [InlineData("legacy_strided", "legacy_strided.pt")]
    [InlineData("protocol4", "protocol4.pth")]
    public void FlatStateDictMatchesTorch(string stem, string file)
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated(file));
        Fixtures.AssertSameTensors(Fixtures.Expected(stem), sd);
    }

    [Theory]
    [InlineData("dtypes.pt")]
    [InlineData("legacy_dtypes.pt")]
    public void EveryNablaDTypeLoads(string file)
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated(file));
        Assert.Equal(["f32", "f64", "f16", "bf16", "i64", "i32", "i8", "u8", "bool"], sd.Keys);
        // dtypes.pt predates Nabla's int16/uint16/uint32/uint64 (int16.pt covers int16; torch 1.13 has no unsigned wide types).
        var older = Enum.GetValues<DType>().Except([DType.Int16, DType.UInt16, DType.UInt32, DType.UInt64]);
        Assert.Equal(older.Order(), sd.Values.Select(t => t.DType).Order());
        Assert.Equal([-(1L << 40), -1, 0, 1, 1L << 40, 7], sd["i64"].ToArray<long>());
        Assert.Equal([(sbyte)-128, (sbyte)-1, (sbyte)0, (sbyte)1, (sbyte)127, (sbyte)7], sd["i8"].ToArray<sbyte>());
        Assert.Equal([true, false, true, false, false, true], sd["bool"].ToArray<bool>());
        Assert.Equal([(byte)0, (byte)1, (byte)2, (byte)128, (byte)200, (byte)255], sd["u8"].ToArray<byte>());
    }

    [Theory]
    [InlineData("strided.pt")]
    [InlineData("legacy_strided.pt")]
    [InlineData("protocol4.pth")]
    public void StridedViewsScalarsAndSharedStorages(string file)
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated(file));
        var full = sd["full"];
        Assert.Equal([4, 6], full.Shape);
        Assert.Equal([6, 4], sd["transposed"].Shape);
        Assert.Equal(full.Transpose(0, 1).Contiguous().ToArray<float>(), sd["transposed"].ToArray<float>());
        Assert.Equal(full.ToArray<float>().Skip(12).Take(12), sd["narrow"].ToArray<float>());
        Assert.Equal(Enumerable.Range(0, 4).Select(r => full.ToArray<float>()[r * 6 + 3]), sd["column"].ToArray<float>());
        Assert.Equal(Enumerable.Range(0, 24).Select(i => (float)i), sd["fortran"].ToArray<float>());
        Assert.Equal([4, 3], sd["expanded"].Shape);
        Assert.Equal([1f, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3], sd["expanded"].ToArray<float>());
        Assert.Empty(sd["scalar"].Shape);
        Assert.Equal(3.5, sd["scalar"].Item());
        Assert.Empty(sd["scalar_i64"].Shape);
        Assert.Equal([-7L], sd["scalar_i64"].ToArray<long>());
        Assert.Equal([0, 5], sd["empty"].Shape);
        Assert.Equal(sd["tied_a"].ToArray<float>(), sd["tied_b"].ToArray<float>());
    }

    [Fact]
    public void TheSameTensorTwiceIsOneTensor()
    {
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(Fixtures.Generated("strided.pt")));
        Assert.Same(root["tied_a"], root["tied_b"]);
        Assert.True(root.IsOrdered);
    }

    [Theory]
    [InlineData("optimizer", "optimizer.pt")]
    [InlineData("legacy_optimizer", "legacy_optimizer.pt")]
    public void AdamStateDict(string stem, string file)
    {
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(Fixtures.Generated(file)));
        var state = Assert.IsType<PyDict>(root["state"]);
        var flat = new Dictionary<string, Tensor>();
        foreach (var (k, v) in state)
            foreach (var (name, t) in Assert.IsType<PyDict>(v))
                if (t is Tensor tensor) flat[$"state.{Assert.IsType<long>(k)}.{name}"] = tensor;
        Fixtures.AssertSameTensors(Fixtures.Expected(stem), flat);
        var group = Assert.IsType<PyDict>(Assert.Single(Assert.IsType<PyList>(root["param_groups"])));
        Assert.Equal(1e-3, group["lr"]);
        Assert.Equal([0L, 1L, 2L, 3L], Assert.IsType<PyList>(group["params"]).Cast<long>());
        Assert.Equal(new object?[] { 0.9, 0.999 }, Assert.IsType<PyTuple>(group["betas"]).ToArray());
    }

    [Theory]
    [InlineData("nested.pt")]
    [InlineData("legacy_nested.pt")]
    public void NestedTrainingCheckpoint(string file)
    {
        var path = Fixtures.Generated(file);
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(path));
        Assert.Equal(7L, root["epoch"]);
        Assert.Equal(0.25, root["loss"]);
        Assert.Equal("net", root["name"]);
        Assert.Equal(new object?[] { 1.5, 2.5 }, Assert.IsType<PyList>(root["history"]).ToArray());
        Assert.Equal(new object?[] { 2L, 3L }, Assert.IsType<PyTuple>(root["shape"]).ToArray());
        Assert.Equal(new TorchDevice("cpu"), root["device"]);
        Assert.Equal(true, root["flag"]);
        Assert.Null(root["nothing"]);
        Assert.Equal(BigInteger.Pow(2, 70), root["big"]);
        Assert.Equal(new byte[] { 0, 1, 255 }, root["raw"]);
        // The state dict's _metadata arrives as an attribute, not as an entry.
        var msd = Assert.IsType<PyDict>(root["model_state_dict"]);
        Assert.True(msd.Attributes.ContainsKey("_metadata"));

        var sd = PyTorchCheckpoint.LoadStateDict(path);
        Fixtures.AssertSameTensors(Fixtures.Expected(file.StartsWith("legacy", StringComparison.Ordinal) ? "legacy_nested" : "nested"), sd);
        Assert.Equal(["0.weight", "0.bias", "2.weight", "2.bias"], sd.Keys);
        Fixtures.AssertSameTensors(sd, PyTorchCheckpoint.LoadStateDict(path, "model_state_dict"));
    }

    [Fact]
    public void WholePickledModuleIsRefusedByName()
    {
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.Load(Fixtures.Generated("whole_module.pt")));
        Assert.Contains("torch.nn.modules.container.Sequential", e.Message);
        Assert.Contains("whole_module.pt", e.Message);
    }

    [Fact]
    public void TorchLoadsWhatNablaWrites()
    {
        // Recorded by make_pytorch_checkpoints.py --nabla: torch 1.13 loaded the .pt files `nabla convert` wrote.
        var path = Fixtures.Generated("nabla_written_torch_check.json");
        Assert.True(File.Exists(path), "run tools/fixtures/make_pytorch_checkpoints.py --nabla ... to record the check");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        Assert.NotEmpty(doc.RootElement.EnumerateObject());
        foreach (var p in doc.RootElement.EnumerateObject())
            Assert.True(p.Value.GetProperty("ok").GetBoolean(), $"{p.Name}: {p.Value}");
    }
}
