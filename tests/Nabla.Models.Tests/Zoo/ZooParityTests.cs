using Nabla.IO;
using Nabla.Models.Zoo;
using Xunit;

namespace Nabla.Models.Tests.Zoo;

/// <summary>
/// The fixtures of tools/fixtures/make_zoo_fixtures.py (torch 1.13): a tiny random model per architecture
/// (config.json + model.safetensors with the Hugging Face / torchvision names) and its inputs and outputs.
/// </summary>
static class ZooFixture
{
    public const double Rtol = 1e-4, Atol = 1e-5;

    /// <summary>tests/fixtures/zoo, found by walking up from the test binaries (no copy step needed).</summary>
    public static string Root { get; } = FindRoot();

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            foreach (var candidate in new[] { Path.Combine(d.FullName, "fixtures", "zoo"), Path.Combine(d.FullName, "tests", "fixtures", "zoo") })
                if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException($"tests/fixtures/zoo not found above {AppContext.BaseDirectory}");
    }

    public static string Dir(string name) => Path.Combine(Root, name);

    public static Dictionary<string, Tensor> Expected(string name) => SafeTensors.Load(Path.Combine(Dir(name), "expected.safetensors"));

    public static void AssertClose(string what, Tensor expected, Tensor actual, double rtol = Rtol, double atol = Atol)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        var e = expected.To(DType.Float64).ToArray<double>();
        var a = actual.To(DType.Float64).ToArray<double>();
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < e.Length; i++)
        {
            double excess = Math.Abs(a[i] - e[i]) - (atol + rtol * Math.Abs(e[i]));
            if (excess > worst || double.IsNaN(a[i])) { worst = double.IsNaN(a[i]) ? double.PositiveInfinity : excess; worstAt = i; }
        }
        Assert.True(worstAt < 0, worstAt < 0 ? "" : $"{what}: element {worstAt} is {a[worstAt]}, expected {e[worstAt]} (rtol {rtol}, atol {atol})");
    }

    public static long[] Longs(Tensor t) => t.To(DType.Int64).ToArray<long>();
}

public class Gpt2ParityTests
{
    [Fact]
    public void Logits_match_pytorch()
    {
        var model = Gpt2LMHeadModel.FromPretrained(ZooFixture.Dir("gpt2"));
        var x = ZooFixture.Expected("gpt2");
        using var _ = GradMode.NoGrad();
        ZooFixture.AssertClose("gpt2 logits", x["logits"], model.Forward(x["input_ids"], null));
    }

    [Fact]
    public void Greedy_continuation_matches_pytorch_with_and_without_cache()
    {
        var model = Gpt2LMHeadModel.FromPretrained(ZooFixture.Dir("gpt2"));
        var x = ZooFixture.Expected("gpt2");
        var expected = ZooFixture.Longs(x["greedy_ids"]);
        var withCache = model.Generate(x["prompt_ids"], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [] });
        var without = model.Generate(x["prompt_ids"], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [], UseCache = false });
        Assert.Equal(expected, ZooFixture.Longs(withCache));
        Assert.Equal(expected, ZooFixture.Longs(without));
    }

    [Fact]
    public void Cached_step_logits_equal_full_recompute()
    {
        var model = Gpt2LMHeadModel.FromPretrained(ZooFixture.Dir("gpt2"));
        var ids = ZooFixture.Expected("gpt2")["input_ids"];
        using var _ = GradMode.NoGrad();
        var full = model.Forward(ids, null);
        var cache = model.CreateCache();
        var first = model.Forward(ids.Narrow(1, 0, 4), cache);
        var parts = new List<Tensor> { first };
        for (int t = 4; t < ids.Size(1); t++) parts.Add(model.Forward(ids.Narrow(1, t, 1), cache));
        Assert.Equal(ids.Size(1), cache.Length);
        ZooFixture.AssertClose("gpt2 cached logits", full, Tensor.Cat(parts, 1));
    }

    [Fact]
    public void Loads_bare_gpt2model_names_and_old_buffers()
    {
        // The original openai-community/gpt2 checkpoint names its tensors without "transformer." and carries
        // attn.bias / attn.masked_bias buffers and sometimes a copy of lm_head.weight.
        var dir = ZooFixture.Dir("gpt2");
        var weights = PretrainedWeights.Load(dir).ToDictionary(kv => kv.Key["transformer.".Length..], kv => kv.Value);
        weights["h.0.attn.bias"] = Tensor.Ones(1, 1, 64, 64);
        weights["h.0.attn.masked_bias"] = Tensor.Scalar(-1e4);
        weights["lm_head.weight"] = weights["wte.weight"];
        var model = new Gpt2LMHeadModel(Gpt2Config.FromHf(HfConfig.Load(dir)));
        var unused = model.LoadWeights(weights);
        Assert.Empty(unused);
        model.Eval();
        var x = ZooFixture.Expected("gpt2");
        using var _ = GradMode.NoGrad();
        ZooFixture.AssertClose("gpt2 logits (bare names)", x["logits"], model.Forward(x["input_ids"], null));
    }

    [Fact]
    public void Config_reads_hf_keys()
    {
        var c = Gpt2Config.FromHf(HfConfig.Load(ZooFixture.Dir("gpt2")));
        Assert.Equal((100, 64, 32, 2, 4), (c.VocabSize, c.NPositions, c.NEmbd, c.NLayer, c.NHead));
        Assert.Equal("gelu_new", c.ActivationFunction);
        Assert.Equal([99L], c.EosTokenIds);
        Assert.True(c.TieWordEmbeddings);
    }

    [Fact]
    public void State_dict_names_are_hf_names()
    {
        var model = new Gpt2LMHeadModel(Gpt2Config.FromHf(HfConfig.Load(ZooFixture.Dir("gpt2"))));
        var ours = model.StateDict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        var theirs = PretrainedWeights.Load(ZooFixture.Dir("gpt2")).Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        Assert.Equal(theirs, ours);
        Assert.Contains("transformer.h.1.attn.c_attn.weight", ours);
        Assert.Equal([32, 96], model.StateDict()["transformer.h.0.attn.c_attn.weight"].Shape); // Conv1D: [in, out]
    }
}

public class LlamaParityTests
{
    [Theory]
    [InlineData("llama")]
    [InlineData("llama-tied")]
    public void Logits_match_pytorch(string name)
    {
        var model = LlamaForCausalLM.FromPretrained(ZooFixture.Dir(name));
        var x = ZooFixture.Expected(name);
        using var _ = GradMode.NoGrad();
        ZooFixture.AssertClose($"{name} logits", x["logits"], model.Forward(x["input_ids"], null));
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("llama-tied")]
    public void Greedy_continuation_matches_pytorch_with_and_without_cache(string name)
    {
        var model = LlamaForCausalLM.FromPretrained(ZooFixture.Dir(name));
        var x = ZooFixture.Expected(name);
        var expected = ZooFixture.Longs(x["greedy_ids"]);
        Assert.Equal(expected, ZooFixture.Longs(model.Generate(x["prompt_ids"], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [] })));
        Assert.Equal(expected, ZooFixture.Longs(model.Generate(x["prompt_ids"], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [], UseCache = false })));
    }

    [Fact]
    public void Cached_step_logits_equal_full_recompute()
    {
        var model = LlamaForCausalLM.FromPretrained(ZooFixture.Dir("llama"));
        var ids = ZooFixture.Expected("llama")["input_ids"];
        using var _ = GradMode.NoGrad();
        var full = model.Forward(ids, null);
        var cache = model.CreateCache();
        var parts = new List<Tensor> { model.Forward(ids.Narrow(1, 0, 3), cache) };
        for (int t = 3; t < ids.Size(1); t++) parts.Add(model.Forward(ids.Narrow(1, t, 1), cache));
        ZooFixture.AssertClose("llama cached logits", full, Tensor.Cat(parts, 1));
    }

    [Fact]
    public void Config_reads_gqa_and_rope_keys()
    {
        var c = LlamaConfig.FromHf(HfConfig.Load(ZooFixture.Dir("llama")));
        Assert.Equal((4, 2, 8), (c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim));
        Assert.Equal(1000.0, c.RopeTheta);
        Assert.False(c.TieWordEmbeddings);
        Assert.Null(c.RopeScaling);
        Assert.True(LlamaConfig.FromHf(HfConfig.Load(ZooFixture.Dir("llama-tied"))).TieWordEmbeddings);
    }

    [Fact]
    public void State_dict_names_are_hf_names()
    {
        foreach (var name in new[] { "llama", "llama-tied" })
        {
            var model = new LlamaForCausalLM(LlamaConfig.FromHf(HfConfig.Load(ZooFixture.Dir(name))));
            var ours = model.StateDict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
            var theirs = PretrainedWeights.Load(ZooFixture.Dir(name)).Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
            Assert.Equal(theirs, ours);
        }
    }

    [Fact]
    public void Unsupported_rope_scaling_is_rejected_by_name()
    {
        var c = HfConfig.Parse("""{"hidden_size": 32, "num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}""");
        var e = Assert.Throws<NotSupportedException>(() => LlamaConfig.FromHf(c));
        Assert.Contains("yarn", e.Message);
        var l3 = LlamaConfig.FromHf(HfConfig.Parse("""{"hidden_size": 32, "num_attention_heads": 4, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"""));
        Assert.Equal("llama3", l3.RopeScaling!.Type);
        Assert.Equal(8.0, l3.RopeScaling.Factor);
    }
}

public class BertParityTests
{
    [Fact]
    public void Masked_lm_logits_and_hidden_states_match_pytorch()
    {
        var model = BertForMaskedLM.FromPretrained(ZooFixture.Dir("bert-mlm"));
        var x = ZooFixture.Expected("bert-mlm");
        using var _ = GradMode.NoGrad();
        var h = model.Bert.Forward(x["input_ids"], x["attention_mask"], x["token_type_ids"]);
        Assert.Null(h.PoolerOutput);
        ZooFixture.AssertClose("bert last_hidden_state", x["last_hidden_state"], h.LastHiddenState);
        ZooFixture.AssertClose("bert mlm logits", x["logits"], model.Forward(x["input_ids"], x["attention_mask"], x["token_type_ids"]));
    }

    [Fact]
    public void Sequence_classification_matches_pytorch()
    {
        var model = BertForSequenceClassification.FromPretrained(ZooFixture.Dir("bert-cls"));
        var x = ZooFixture.Expected("bert-cls");
        Assert.Equal(["neg", "neutral", "pos"], model.Labels);
        using var _ = GradMode.NoGrad();
        var h = model.Bert.Forward(x["input_ids"], x["attention_mask"], x["token_type_ids"]);
        ZooFixture.AssertClose("bert last_hidden_state", x["last_hidden_state"], h.LastHiddenState);
        ZooFixture.AssertClose("bert pooler_output", x["pooler_output"], h.PoolerOutput!);
        ZooFixture.AssertClose("bert classifier logits", x["logits"], model.Forward(x["input_ids"], x["attention_mask"], x["token_type_ids"]));
    }

    [Fact]
    public void Attention_mask_hides_padding()
    {
        // Row 1 has 6 real tokens and 3 padded ones: its first 6 outputs must equal those of the unpadded 6-token input.
        var model = BertForMaskedLM.FromPretrained(ZooFixture.Dir("bert-mlm"));
        var x = ZooFixture.Expected("bert-mlm");
        using var _ = GradMode.NoGrad();
        var padded = model.Forward(x["input_ids"], x["attention_mask"], x["token_type_ids"]).Select(0, 1).Narrow(0, 0, 6);
        var ids = x["input_ids"].Select(0, 1).Narrow(0, 0, 6).Unsqueeze(0);
        var tt = x["token_type_ids"].Select(0, 1).Narrow(0, 0, 6).Unsqueeze(0);
        var alone = model.Forward(ids, null, tt).Select(0, 0);
        ZooFixture.AssertClose("bert unpadded vs padded", alone, padded);
    }

    [Fact]
    public void Loads_legacy_names_and_pretraining_extras()
    {
        // bert-base-uncased style: LayerNorm.gamma/beta, position_ids buffer, decoder copies, next-sentence head.
        var dir = ZooFixture.Dir("bert-mlm");
        var weights = new Dictionary<string, Tensor>();
        foreach (var (k, v) in PretrainedWeights.Load(dir))
            weights[k.Replace("LayerNorm.weight", "LayerNorm.gamma", StringComparison.Ordinal).Replace("LayerNorm.bias", "LayerNorm.beta", StringComparison.Ordinal)] = v;
        weights["bert.embeddings.position_ids"] = Tensor.Arange(0, 64, 1, DType.Int64).Unsqueeze(0);
        weights["cls.predictions.decoder.weight"] = weights["bert.embeddings.word_embeddings.weight"];
        weights["cls.predictions.decoder.bias"] = weights["cls.predictions.bias"];
        weights["cls.seq_relationship.weight"] = Tensor.Zeros(2, 32);
        var model = new BertForMaskedLM(BertConfig.FromHf(HfConfig.Load(dir)));
        var unused = model.LoadWeights(weights);
        Assert.Equal(["cls.seq_relationship.weight"], unused);
        model.Eval();
        var x = ZooFixture.Expected("bert-mlm");
        using var _ = GradMode.NoGrad();
        ZooFixture.AssertClose("bert mlm logits (legacy names)", x["logits"], model.Forward(x["input_ids"], x["attention_mask"], x["token_type_ids"]));
    }

    [Fact]
    public void Missing_classifier_throws_unless_a_new_head_is_allowed()
    {
        var dir = ZooFixture.Dir("bert-cls");
        var weights = PretrainedWeights.Load(dir).Where(kv => !kv.Key.StartsWith("classifier.", StringComparison.Ordinal)).ToDictionary();
        var model = new BertForSequenceClassification(BertConfig.FromHf(HfConfig.Load(dir)));
        var e = Assert.Throws<ModelFormatException>(() => model.LoadWeights(weights));
        Assert.Contains("classifier.weight", e.Message);
        model.LoadWeights(weights, allowNewHead: true);
    }
}

public class VisionParityTests
{
    [Fact]
    public void Vit_logits_and_hidden_states_match_pytorch()
    {
        var model = ViTForImageClassification.FromPretrained(ZooFixture.Dir("vit"));
        var x = ZooFixture.Expected("vit");
        Assert.Equal(5, model.Labels.Count);
        using var _ = GradMode.NoGrad();
        ZooFixture.AssertClose("vit last_hidden_state", x["last_hidden_state"], model.Vit.Forward(x["pixel_values"]));
        ZooFixture.AssertClose("vit logits", x["logits"], model.Forward(x["pixel_values"]));
    }

    [Theory]
    [InlineData("resnet18")]
    [InlineData("resnet50-narrow")]
    public void Resnet_logits_match_pytorch(string name)
    {
        var model = ResNet.FromPretrained(ZooFixture.Dir(name));
        var x = ZooFixture.Expected(name);
        using var _ = GradMode.NoGrad();
        ZooFixture.AssertClose($"{name} logits", x["logits"], model.Forward(x["pixel_values"]));
    }

    [Fact]
    public void Resnet_names_are_torchvision_names()
    {
        var resnet18 = new ResNet(ResNetConfig.ResNet18());
        var keys = resnet18.StateDict().Keys.ToHashSet();
        foreach (var k in new[] { "conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.bn2.num_batches_tracked", "fc.bias" })
            Assert.Contains(k, keys);
        Assert.DoesNotContain("layer1.0.downsample.0.weight", keys);
        Assert.Equal(11_689_512, resnet18.NumParameters()); // torchvision resnet18
    }
}
