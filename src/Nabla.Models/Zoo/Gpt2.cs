using System.Globalization;
using Nabla.NN;

namespace Nabla.Models.Zoo;

/// <summary>The keys of a Hugging Face GPT2Config that the model uses.</summary>
public sealed record Gpt2Config
{
    public int VocabSize { get; init; } = 50257;
    public int NPositions { get; init; } = 1024;
    public int NEmbd { get; init; } = 768;
    public int NLayer { get; init; } = 12;
    public int NHead { get; init; } = 12;
    /// <summary>MLP width; 4·n_embd when null.</summary>
    public int? NInner { get; init; }
    public string ActivationFunction { get; init; } = "gelu_new";
    public double LayerNormEpsilon { get; init; } = 1e-5;
    public bool ScaleAttnWeights { get; init; } = true;
    public bool ScaleAttnByInverseLayerIdx { get; init; }
    public bool TieWordEmbeddings { get; init; } = true;
    public long[] EosTokenIds { get; init; } = [50256];

    public static Gpt2Config FromHf(HfConfig c) => new()
    {
        VocabSize = c.GetInt("vocab_size", 50257),
        NPositions = c.GetInt("n_positions", 1024),
        NEmbd = c.GetInt("n_embd", 768),
        NLayer = c.GetInt("n_layer", 12),
        NHead = c.GetInt("n_head", 12),
        NInner = c.GetIntOrNull("n_inner"),
        ActivationFunction = c.GetString("activation_function", "gelu_new")!,
        LayerNormEpsilon = c.GetDouble("layer_norm_epsilon", 1e-5),
        ScaleAttnWeights = c.GetBool("scale_attn_weights", true),
        ScaleAttnByInverseLayerIdx = c.GetBool("scale_attn_by_inverse_layer_idx", false),
        TieWordEmbeddings = c.GetBool("tie_word_embeddings", true),
        EosTokenIds = c.Has("eos_token_id") ? c.GetIntList("eos_token_id") : [50256],
    };

    internal void Validate()
    {
        if (NEmbd % NHead != 0) throw new ModelFormatException($"gpt2 config: n_embd {NEmbd} is not divisible by n_head {NHead}");
    }
}

/// <summary>transformers' Conv1D: a linear layer stored transposed, weight (in, out), y = x·W + b.</summary>
public sealed class Gpt2Conv1D : Module
{
    public Tensor Weight { get; }
    public Tensor Bias { get; }

    public Gpt2Conv1D(int inFeatures, int outFeatures)
    {
        Weight = RegisterParameter("weight", Init.Normal(Tensor.Zeros(inFeatures, outFeatures), 0, 0.02));
        Bias = RegisterParameter("bias", Tensor.Zeros(outFeatures));
    }

    /// <param name="input">(..., in)</param>
    public override Tensor Forward(Tensor input) => input.Matmul(Weight).Add(Bias);
}

/// <summary>Causal self-attention with fused q/k/v (c_attn) and output projection (c_proj).</summary>
public sealed class Gpt2Attention : Module
{
    readonly int heads, layerIdx;
    readonly Gpt2Config config;
    public Gpt2Conv1D CAttn { get; }
    public Gpt2Conv1D CProj { get; }

    public Gpt2Attention(Gpt2Config config, int layerIdx)
    {
        this.config = config;
        this.layerIdx = layerIdx;
        heads = config.NHead;
        CAttn = RegisterModule("c_attn", new Gpt2Conv1D(config.NEmbd, 3 * config.NEmbd));
        CProj = RegisterModule("c_proj", new Gpt2Conv1D(config.NEmbd, config.NEmbd));
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="mask">additive causal mask (T, S)</param>
    public Tensor Forward(Tensor x, Tensor mask, KVCache? cache)
    {
        int c = x.Size(2);
        var qkv = CAttn.Forward(x).Split(c, 2);
        var q = ZooOps.SplitHeads(qkv[0], heads);
        var k = ZooOps.SplitHeads(qkv[1], heads);
        var v = ZooOps.SplitHeads(qkv[2], heads);
        if (cache is not null) (k, v) = cache.Append(layerIdx, k, v);
        double scale = config.ScaleAttnWeights ? 1.0 / Math.Sqrt(c / heads) : 1.0;
        if (config.ScaleAttnByInverseLayerIdx) scale /= layerIdx + 1;
        return CProj.Forward(ZooOps.MergeHeads(ZooOps.Attention(q, k, v, mask, scale)));
    }
}

public sealed class Gpt2Mlp : Module
{
    readonly string act;
    public Gpt2Conv1D CFc { get; }
    public Gpt2Conv1D CProj { get; }

    public Gpt2Mlp(Gpt2Config config)
    {
        int inner = config.NInner ?? 4 * config.NEmbd;
        act = config.ActivationFunction;
        CFc = RegisterModule("c_fc", new Gpt2Conv1D(config.NEmbd, inner));
        CProj = RegisterModule("c_proj", new Gpt2Conv1D(inner, config.NEmbd));
    }

    public override Tensor Forward(Tensor input) => CProj.Forward(ZooOps.Activation(CFc.Forward(input), act));
}

/// <summary>Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).</summary>
public sealed class Gpt2Block : Module
{
    public LayerNorm Ln1 { get; }
    public Gpt2Attention Attn { get; }
    public LayerNorm Ln2 { get; }
    public Gpt2Mlp Mlp { get; }

    public Gpt2Block(Gpt2Config config, int layerIdx)
    {
        Ln1 = RegisterModule("ln_1", new LayerNorm(config.NEmbd, config.LayerNormEpsilon));
        Attn = RegisterModule("attn", new Gpt2Attention(config, layerIdx));
        Ln2 = RegisterModule("ln_2", new LayerNorm(config.NEmbd, config.LayerNormEpsilon));
        Mlp = RegisterModule("mlp", new Gpt2Mlp(config));
    }

    public Tensor Forward(Tensor x, Tensor mask, KVCache? cache)
    {
        x = x.Add(Attn.Forward(Ln1.Forward(x), mask, cache));
        return x.Add(Mlp.Forward(Ln2.Forward(x)));
    }
}

/// <summary>GPT2Model: token and position embeddings, the blocks and the final LayerNorm.</summary>
public sealed class Gpt2Model : Module
{
    public Gpt2Config Config { get; }
    public Embedding Wte { get; }
    public Embedding Wpe { get; }
    public ModuleList H { get; }
    public LayerNorm LnF { get; }

    public Gpt2Model(Gpt2Config config)
    {
        config.Validate();
        Config = config;
        Wte = RegisterModule("wte", new Embedding(config.VocabSize, config.NEmbd));
        Wpe = RegisterModule("wpe", new Embedding(config.NPositions, config.NEmbd));
        H = RegisterModule("h", new ModuleList());
        for (int i = 0; i < config.NLayer; i++) H.Add(new Gpt2Block(config, i));
        LnF = RegisterModule("ln_f", new LayerNorm(config.NEmbd, config.LayerNormEpsilon));
    }

    /// <summary>Hidden states (B, T, C) for input_ids (B, T), continuing the cache's positions when given.</summary>
    public Tensor Forward(Tensor inputIds, KVCache? cache)
    {
        ZooOps.CheckIds(inputIds, Config.VocabSize, "gpt2");
        int t = inputIds.Size(1), past = cache?.Length ?? 0;
        if (past + t > Config.NPositions)
            throw new ArgumentOutOfRangeException(nameof(inputIds), $"gpt2: {past} cached + {t} new positions exceed n_positions {Config.NPositions}");
        var pos = Tensor.Arange(past, past + t, 1, DType.Int64);
        var x = Wte.Forward(inputIds).Add(Wpe.Forward(pos));
        var mask = ZooOps.CausalMask(t, past);
        foreach (var block in H) x = ((Gpt2Block)block).Forward(x, mask, cache);
        return LnF.Forward(x);
    }

    public override Tensor Forward(Tensor input) => Forward(input, null);
}

/// <summary>
/// GPT2LMHeadModel: <c>transformer.*</c> and an LM head tied to <c>transformer.wte.weight</c> (a separate
/// <c>lm_head.weight</c> only when tie_word_embeddings is false).
/// </summary>
public sealed class Gpt2LMHeadModel : Module, ICausalLanguageModel
{
    public Gpt2Config Config { get; }
    public Gpt2Model Transformer { get; }
    public Linear? LmHead { get; }

    public Gpt2LMHeadModel(Gpt2Config config)
    {
        Config = config;
        Transformer = RegisterModule("transformer", new Gpt2Model(config));
        if (!config.TieWordEmbeddings) LmHead = RegisterModule("lm_head", new Linear(config.NEmbd, config.VocabSize, bias: false));
    }

    public int VocabSize => Config.VocabSize;
    public IReadOnlyList<long> EosTokenIds => Config.EosTokenIds;
    public KVCache CreateCache() => new(Config.NLayer);

    /// <summary>Logits (B, T, V) for input_ids (B, T).</summary>
    public Tensor Forward(Tensor inputIds, KVCache? cache)
    {
        var h = Transformer.Forward(inputIds, cache);
        return Functional.Linear(h, LmHead?.Weight ?? Transformer.Wte.Weight);
    }

    public override Tensor Forward(Tensor input) => Forward(input, null);

    public Tensor Generate(Tensor inputIds, GenerationOptions? options = null) => TextGeneration.Generate(this, inputIds, options);

    /// <summary>
    /// Loads a Hugging Face GPT-2 folder (config.json and model.safetensors or pytorch_model.bin). Accepts both the
    /// GPT2LMHeadModel names (<c>transformer.h.0...</c>) and the bare GPT2Model names of the original gpt2 checkpoints
    /// (<c>h.0...</c>); the attention-mask buffers old checkpoints carry are skipped.
    /// </summary>
    public static Gpt2LMHeadModel FromPretrained(string directory)
    {
        var config = Gpt2Config.FromHf(HfConfig.Load(directory));
        var model = new Gpt2LMHeadModel(config);
        model.LoadWeights(PretrainedWeights.Load(directory), directory);
        model.Eval();
        return model;
    }

    /// <summary>Copies checkpoint tensors in; returns the names that were not used.</summary>
    public List<string> LoadWeights(IReadOnlyDictionary<string, Tensor> weights, string source = "weights") =>
        PretrainedWeights.LoadInto(this, weights, source, "transformer.", name =>
        {
            if (name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)) return null;
            if (name == "lm_head.weight" && Config.TieWordEmbeddings) return null;
            return name;
        });

    protected override string ExtraRepr() => string.Create(CultureInfo.InvariantCulture, $"layers={Config.NLayer}, n_embd={Config.NEmbd}, heads={Config.NHead}, vocab={Config.VocabSize}");
}
