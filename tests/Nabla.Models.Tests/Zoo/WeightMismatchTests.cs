using System.Text.Json.Nodes;
using Nabla.IO;
using Nabla.Models.Zoo;
using Xunit;

namespace Nabla.Models.Tests.Zoo;

/// <summary>A zoo checkpoint that disagrees with its config: a typed error naming the weight file and the tensor.</summary>
public sealed class WeightMismatchTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nabla-zoo-mismatch-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    string CopyLlama(Action<JsonObject>? editConfig = null, Action<Dictionary<string, Tensor>>? editWeights = null)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(ZooFixture.Dir("llama"), "config.json")))!.AsObject();
        editConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var weights = SafeTensors.Load(Path.Combine(ZooFixture.Dir("llama"), "model.safetensors"));
        editWeights?.Invoke(weights);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), weights);
        return dir;
    }

    [Fact]
    public void ShapeThatDisagreesWithTheConfig()
    {
        CopyLlama(c => c["intermediate_size"] = 48);
        var e = Assert.Throws<ModelFormatException>(() => LlamaForCausalLM.FromPretrained(dir));
        Assert.Contains(Path.Combine(dir, "model.safetensors"), e.Message);
        Assert.Contains("tensor 'model.layers.0.mlp.", e.Message);
        // The model's MLP is 48 wide now, the checkpoint's 64: gate/up are [48, 32] against [64, 32], down the transpose.
        Assert.True(e.Message.Contains("[48, 32]", StringComparison.Ordinal) || e.Message.Contains("[32, 48]", StringComparison.Ordinal), e.Message);
    }

    [Fact]
    public void DTypeThatDisagreesWithTheModel()
    {
        CopyLlama(editWeights: w => w["model.norm.weight"] = Tensor.Ones([32], DType.Int32));
        var e = Assert.Throws<ModelFormatException>(() => LlamaForCausalLM.FromPretrained(dir));
        Assert.Contains(Path.Combine(dir, "model.safetensors"), e.Message);
        Assert.Contains("tensor 'model.norm.weight'", e.Message);
        Assert.Contains("int32", e.Message);
    }

    [Fact]
    public void MissingWeight()
    {
        CopyLlama(editWeights: w => w.Remove("model.layers.1.input_layernorm.weight"));
        var e = Assert.Throws<ModelFormatException>(() => LlamaForCausalLM.FromPretrained(dir));
        Assert.Contains(Path.Combine(dir, "model.safetensors"), e.Message);
        Assert.Contains("model.layers.1.input_layernorm.weight", e.Message);
    }
}

/// <summary>pytorch_model.bin.index.json: shards of torch.save files, as older transformers releases wrote them.</summary>
public sealed class PyTorchShardedIndexTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nabla-bin-index-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    Dictionary<string, Tensor> WriteShards(string index)
    {
        var all = SafeTensors.Load(Path.Combine(ZooFixture.Dir("llama"), "model.safetensors"));
        var names = all.Keys.Order(StringComparer.Ordinal).ToList();
        var first = names.Take(names.Count / 2).ToDictionary(n => n, n => all[n]);
        var second = names.Skip(names.Count / 2).ToDictionary(n => n, n => all[n]);
        Nabla.Interop.CheckpointFiles.SaveTensors(Path.Combine(dir, "pytorch_model-00001-of-00002.bin"), first);
        Nabla.Interop.CheckpointFiles.SaveTensors(Path.Combine(dir, "pytorch_model-00002-of-00002.bin"), second);
        File.WriteAllText(Path.Combine(dir, "pytorch_model.bin.index.json"), index);
        return all;
    }

    static string Index(IEnumerable<string> first, IEnumerable<string> second) =>
        "{\"metadata\": {}, \"weight_map\": {" + string.Join(", ",
            first.Select(n => $"\"{n}\": \"pytorch_model-00001-of-00002.bin\"").Concat(second.Select(n => $"\"{n}\": \"pytorch_model-00002-of-00002.bin\""))) + "}}";

    [Fact]
    public void LoadsEveryShardAndTheModelRuns()
    {
        var all = SafeTensors.Load(Path.Combine(ZooFixture.Dir("llama"), "model.safetensors"));
        var names = all.Keys.Order(StringComparer.Ordinal).ToList();
        WriteShards(Index(names.Take(names.Count / 2), names.Skip(names.Count / 2)));
        var loaded = PretrainedWeights.Load(dir);
        Assert.Equal(names, loaded.Keys.Order(StringComparer.Ordinal));
        foreach (var n in names) Assert.Equal(all[n].ToArray<float>(), loaded[n].ToArray<float>());
        File.Copy(Path.Combine(ZooFixture.Dir("llama"), "config.json"), Path.Combine(dir, "config.json"));
        var model = LlamaForCausalLM.FromPretrained(dir).StateDict();
        var reference = LlamaForCausalLM.FromPretrained(ZooFixture.Dir("llama")).StateDict();
        Assert.Equal(reference.Keys.Order(StringComparer.Ordinal), model.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, v) in reference) Assert.Equal(v.ToArray<float>(), model[k].ToArray<float>());
    }

    [Fact]
    public void AWeightMapEntryMissingFromItsShardIsNamed()
    {
        var all = SafeTensors.Load(Path.Combine(ZooFixture.Dir("llama"), "model.safetensors"));
        var names = all.Keys.Order(StringComparer.Ordinal).ToList();
        // The last name is said to be in shard 1, but it was written to shard 2.
        WriteShards(Index(names.Take(names.Count / 2).Append(names[^1]), names.Skip(names.Count / 2).SkipLast(1)));
        var e = Assert.Throws<ModelFormatException>(() => PretrainedWeights.Load(dir));
        Assert.Contains("pytorch_model.bin.index.json", e.Message);
        Assert.Contains($"tensor '{names[^1]}'", e.Message);
        Assert.Contains("pytorch_model-00001-of-00002.bin", e.Message);
    }

    [Theory]
    [InlineData("../outside.bin")]
    [InlineData("/etc/passwd")]
    [InlineData("sub/x.bin")]
    public void ShardNamesOutsideTheFolderAreRefused(string shard)
    {
        File.WriteAllText(Path.Combine(dir, "pytorch_model.bin.index.json"), $"{{\"weight_map\": {{\"w\": \"{shard}\"}}}}");
        var e = Assert.Throws<ModelFormatException>(() => PretrainedWeights.Load(dir));
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains(shard, e.Message);
    }

    [Fact]
    public void NonStringShardAndBadJsonAreModelFormatErrors()
    {
        File.WriteAllText(Path.Combine(dir, "pytorch_model.bin.index.json"), "{\"weight_map\": {\"w\": 3}}");
        Assert.Contains("tensor 'w'", Assert.Throws<ModelFormatException>(() => PretrainedWeights.Load(dir)).Message);
        File.WriteAllText(Path.Combine(dir, "pytorch_model.bin.index.json"), "{\"weight_map\": ");
        Assert.Contains("not valid JSON", Assert.Throws<ModelFormatException>(() => PretrainedWeights.Load(dir)).Message);
    }
}
