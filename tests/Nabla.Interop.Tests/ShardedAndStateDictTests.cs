using System.Text.Json;
using Nabla.IO;
using Nabla.NN;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>Sharded safetensors output with an index, and loading checkpoints into modules with typed errors.</summary>
public sealed class ShardedAndStateDictTests : IDisposable
{
    readonly Fixtures.TempDir dir = new();

    public void Dispose() => dir.Dispose();

    static Dictionary<string, Tensor> Weights()
    {
        Tensor.ManualSeed(3);
        return new Dictionary<string, Tensor>
        {
            ["b.weight"] = Tensor.Randn(10, 10),                               // 400 bytes
            ["a.weight"] = Tensor.Randn(5, 10),                                // 200 bytes
            ["a.bias"] = Tensor.Randn(5),                                      // 20 bytes
            ["c.big"] = Tensor.Randn(30, 10),                                  // 1200 bytes, more than a shard
            ["d.steps"] = Tensor.FromArray(new[] { 1L, 2L, 3L }, 3),           // 24 bytes
            ["e.half"] = Tensor.Randn(4).To(DType.BFloat16),                   // 8 bytes
        };
    }

    [Fact]
    public void ShardsFollowNameOrderAndTheSizeLimit()
    {
        var w = Weights();
        var written = SafeTensors.SaveSharded(dir.Path, w, maxShardBytes: 500);
        // name order: a.bias 20, a.weight 200 | b.weight 400 | c.big 1200 | d.steps 24, e.half 8
        string[] shards = ["model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors"];
        Assert.Equal([.. shards.Select(dir.File), dir.File("model.safetensors.index.json")], written);
        Assert.Equal(["a.bias", "a.weight"], SafeTensors.ReadHeader(dir.File(shards[0])).Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
        Assert.Equal(["b.weight"], SafeTensors.ReadHeader(dir.File(shards[1])).Tensors.Select(t => t.Name));
        Assert.Equal(["c.big"], SafeTensors.ReadHeader(dir.File(shards[2])).Tensors.Select(t => t.Name));
        Assert.Equal(["d.steps", "e.half"], SafeTensors.ReadHeader(dir.File(shards[3])).Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));

        // The index as transformers writes it: json.dumps(indent=2, sort_keys=True) + "\n".
        string expected = """
            {
              "metadata": {
                "total_size": 1852
              },
              "weight_map": {
                "a.bias": "model-00001-of-00004.safetensors",
                "a.weight": "model-00001-of-00004.safetensors",
                "b.weight": "model-00002-of-00004.safetensors",
                "c.big": "model-00003-of-00004.safetensors",
                "d.steps": "model-00004-of-00004.safetensors",
                "e.half": "model-00004-of-00004.safetensors"
              }
            }

            """;
        Assert.Equal(expected.ReplaceLineEndings("\n"), File.ReadAllText(dir.File("model.safetensors.index.json")));
    }

    [Fact]
    public void ShardedRoundTripIsBitIdenticalAndDeterministic()
    {
        var w = Weights();
        var md = new Dictionary<string, string> { ["format"] = "pt" };
        var first = SafeTensors.SaveSharded(dir.Path, w, 300, md);
        var bytes = first.Select(File.ReadAllBytes).ToList();
        var (loaded, metadata) = SafeTensors.LoadWithMetadata(dir.File("model.safetensors.index.json"));
        Fixtures.AssertSameTensors(w, loaded);
        Assert.Equal("pt", metadata["format"]);
        Assert.Equal("1852", metadata["total_size"]);
        // A folder resolves to its index; the same tensors in another insertion order give the same bytes.
        Fixtures.AssertSameTensors(w, SafeTensors.Load(dir.Path));
        var reversed = w.Reverse().ToDictionary(kv => kv.Key, kv => kv.Value);
        var second = SafeTensors.SaveSharded(dir.Path, reversed, 300, md);
        Assert.Equal(first, second);
        for (int i = 0; i < first.Count; i++) Assert.Equal(bytes[i], File.ReadAllBytes(second[i]));
        foreach (var shard in first.SkipLast(1)) Assert.Equal("pt", SafeTensors.ReadHeader(shard).Metadata["format"]);
    }

    [Fact]
    public void OneShardWritesASingleFileWithoutIndex()
    {
        var w = Weights();
        var written = SafeTensors.SaveSharded(dir.Path, w, 1L << 30);
        Assert.Equal([dir.File("model.safetensors")], written);
        Assert.False(File.Exists(dir.File("model.safetensors.index.json")));
        Assert.Equal(File.ReadAllBytes(dir.File("model.safetensors")), SafeTensors.Serialize(w));
    }

    [Fact]
    public void ShardingArgumentsAreChecked()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SafeTensors.SaveSharded(dir.Path, Weights(), 0));
        Assert.Throws<ArgumentException>(() => SafeTensors.SaveSharded(dir.Path, Weights(), 10, prefix: "../x"));
        Assert.Throws<ArgumentException>(() => SafeTensors.SaveSharded(dir.Path, Weights(), 10, new Dictionary<string, string> { ["total_size"] = "1" }));
    }

    [Fact]
    public void ConvertShardedFromAPyTorchCheckpoint()
    {
        var src = Fixtures.Generated("dtypes.pt");
        var expected = PyTorchCheckpoint.LoadStateDict(src);
        long total = expected.Values.Sum(t => (long)t.NumElements * t.DType.ElementSize());
        var written = CheckpointFiles.ConvertSharded(src, dir.Path, Math.Max(1, total / 3));
        Assert.True(written.Count >= 3, $"{written.Count} files");
        Fixtures.AssertSameTensors(expected, SafeTensors.Load(written[^1]));
        using var index = JsonDocument.Parse(File.ReadAllBytes(written[^1]));
        Assert.Equal(total, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
    }

    sealed class Net : Module
    {
        public readonly Linear Fc;
        public readonly BatchNorm1d Bn;

        public Net()
        {
            Fc = new Linear(3, 2);
            Bn = new BatchNorm1d(2);
            RegisterModule("fc", Fc);
            RegisterModule("bn", Bn);
        }
    }

    static Dictionary<string, Tensor> GoodState() => new Net().StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Add(1.0).To(kv.Value.DType));

    string SaveState(string name, Dictionary<string, Tensor> state)
    {
        var p = dir.File(name);
        CheckpointFiles.SaveTensors(p, state);
        return p;
    }

    [Fact]
    public void LoadIntoCopiesAMatchingCheckpoint()
    {
        var state = GoodState();
        foreach (var file in new[] { "good.safetensors", "good.pt" })
        {
            var net = new Net();
            var (missing, unexpected) = CheckpointFiles.LoadInto(net, SaveState(file, state));
            Assert.Empty(missing);
            Assert.Empty(unexpected);
            Fixtures.AssertSameTensors(state, net.StateDict());
        }
    }

    [Theory]
    [InlineData("shape.safetensors")]
    [InlineData("shape.pt")]
    public void ShapeMismatchNamesFileAndTensorAndCopiesNothing(string file)
    {
        var state = GoodState();
        state["fc.weight"] = Tensor.Ones(2, 4);
        var p = SaveState(file, state);
        var net = new Net();
        var before = net.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
        var e = Assert.Throws<ModelFormatException>(() => CheckpointFiles.LoadInto(net, p));
        Assert.Contains(file, e.Message);
        Assert.Contains("'fc.weight'", e.Message);
        Assert.Contains("[2, 4]", e.Message);
        Assert.Contains("[2, 3]", e.Message);
        Fixtures.AssertSameTensors(before, net.StateDict());
    }

    [Fact]
    public void DTypeMismatchNamesFileAndTensor()
    {
        var state = GoodState();
        state["bn.num_batches_tracked"] = Tensor.Scalar(2.0);
        var e = Assert.Throws<ModelFormatException>(() => CheckpointFiles.LoadInto(new Net(), SaveState("dtype.safetensors", state)));
        Assert.Contains("dtype.safetensors", e.Message);
        Assert.Contains("'bn.num_batches_tracked'", e.Message);
        Assert.Contains("int64", e.Message);

        state = GoodState();
        state["fc.bias"] = Tensor.FromArray(new[] { 1, 2 }, 2);
        e = Assert.Throws<ModelFormatException>(() => CheckpointFiles.LoadInto(new Net(), SaveState("dtype2.pt", state)));
        Assert.Contains("dtype2.pt", e.Message);
        Assert.Contains("'fc.bias'", e.Message);

        // A half-precision checkpoint loads into a float32 model, converted (as torch's copy_ does).
        state = GoodState();
        state["fc.weight"] = state["fc.weight"].To(DType.Float16);
        var net = new Net();
        CheckpointFiles.LoadInto(net, SaveState("half.safetensors", state));
        Assert.Equal(state["fc.weight"].To(DType.Float32).ToArray<float>(), net.Fc.Weight.ToArray<float>());
    }

    [Fact]
    public void MissingAndUnexpectedKeysNameFileAndKeys()
    {
        var state = GoodState();
        state.Remove("bn.running_var");
        state["head.weight"] = Tensor.Ones(1);
        var p = SaveState("keys.safetensors", state);
        var e = Assert.Throws<ModelFormatException>(() => CheckpointFiles.LoadInto(new Net(), p));
        Assert.Contains("keys.safetensors", e.Message);
        Assert.Contains("missing keys: bn.running_var", e.Message);
        Assert.Contains("unexpected keys: head.weight", e.Message);
        var (missing, unexpected) = CheckpointFiles.LoadInto(new Net(), p, strict: false);
        Assert.Equal(["bn.running_var"], missing);
        Assert.Equal(["head.weight"], unexpected);
    }

    [Fact]
    public void LoadIntoReadsAShardedIndex()
    {
        var state = GoodState();
        SafeTensors.SaveSharded(dir.Path, state, 16);
        var net = new Net();
        CheckpointFiles.LoadInto(net, dir.File("model.safetensors.index.json"));
        Fixtures.AssertSameTensors(state, net.StateDict());
    }
}

public sealed class ShardSizeTests
{
    [Theory]
    [InlineData("1000", 1000L)]
    [InlineData("5GB", 5_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("0.5 kb", 500L)]
    [InlineData("2MiB", 2_097_152L)]
    [InlineData("10B", 10L)]
    public void ParsesTransformersSizes(string text, long bytes) => Assert.Equal(bytes, CheckpointFiles.ParseShardSize(text));

    [Theory]
    [InlineData("")]
    [InlineData("lots")]
    [InlineData("-5MB")]
    [InlineData("0")]
    [InlineData("1e30GB")]
    public void RejectsWhatIsNotASize(string text) => Assert.Null(CheckpointFiles.ParseShardSize(text));
}
