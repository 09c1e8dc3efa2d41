using System.Globalization;
using System.Text.Json;
using Nabla.NN;

namespace Nabla.Models.Zoo;

/// <summary>The keys of a Hugging Face LlamaConfig that the model uses.</summary>
public sealed record LlamaConfig
{
    public int VocabSize { get; init; } = 32000;
    public int HiddenSize { get; init; } = 4096;
    public int IntermediateSize { get; init; } = 11008;
    public int NumHiddenLayers { get; init; } = 32;
    public int NumAttentionHeads { get; init; } = 32;
    /// <summary>Key/value heads for grouped-query attention; equal to the attention heads when absent.</summary>
    public int NumKeyValueHeads { get; init; } = 32;
    /// <summary>Per-head width; hidden_size / num_attention_heads when absent.</summary>
    public int HeadDim { get; init; } = 128;
    public string HiddenAct { get; init; } = "silu";
    public int MaxPositionEmbeddings { get; init; } = 2048;
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000;
    public RopeScaling? RopeScaling { get; init; }
    public bool AttentionBias { get; init; }
    public bool MlpBias { get; init; }
    public bool TieWordEmbeddings { get; init; }
    public long[] EosTokenIds { get; init; } = [2];

    public static LlamaConfig FromHf(HfConfig c)
    {
        int hidden = c.GetInt("hidden_size", 4096), heads = c.GetInt("num_attention_heads", 32);
        return new()
        {
            VocabSize = c.GetInt("vocab_size", 32000),
            HiddenSize = hidden,
            IntermediateSize = c.GetInt("intermediate_size", 11008),
            NumHiddenLayers = c.GetInt("num_hidden_layers", 32),
            NumAttentionHeads = heads,
            NumKeyValueHeads = c.GetInt("num_key_value_heads", heads),
            HeadDim = c.GetInt("head_dim", hidden / heads),
            HiddenAct = c.GetString("hidden_act", "silu")!,
            MaxPositionEmbeddings = c.GetInt("max_position_embeddings", 2048),
            RmsNormEps = c.GetDouble("rms_norm_eps", 1e-6),
            RopeTheta = c.GetDouble("rope_theta", 10000),
            RopeScaling = c.TryGet("rope_scaling", out var rs) ? RopeScaling.FromJson(rs, c.Source) : null,
            AttentionBias = c.GetBool("attention_bias", false),
            MlpBias = c.GetBool("mlp_bias", false),
            TieWordEmbeddings = c.GetBool("tie_word_embeddings", false),
            EosTokenIds = c.GetIntList("eos_token_id"),
        };
    }

    internal void Validate()
    {
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new ModelFormatException($"llama config: num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {NumKeyValueHeads}");
        if (HeadDim % 2 != 0) throw new ModelFormatException($"llama config: head_dim {HeadDim} must be even for rotary embeddings");
    }
}

/// <summary>config.json's rope_scaling: "default", "linear" or "llama3" (others are rejected).</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor = 1, double HighFreqFactor = 4, int OriginalMaxPositionEmbeddings = 8192)
{
    public static RopeScaling? FromJson(JsonElement e, string source)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new ModelFormatException($"{source}: rope_scaling must be an object or null");
        var c = new HfConfig(e, source + " rope_scaling");
        string type = c.GetString("rope_type", null) ?? c.GetString("type", "default")!;
        if (type is not ("default" or "linear" or "llama3"))
            throw new NotSupportedException($"{source}: rope_scaling type '{type}' is not supported (default, linear, llama3)");
        return new RopeScaling(type, c.GetDouble("factor", 1), c.GetDouble("low_freq_factor", 1), c.GetDouble("high_freq_factor", 4),
            c.GetInt("original_max_position_embeddings", 8192));
    }
}

/// <summary>Rotary position embeddings: inverse frequencies θ^(-2i/d), with the configured scaling.</summary>
public sealed class RotaryEmbedding
{
    readonly float[] invFreq;

    public RotaryEmbedding(int headDim, double theta, RopeScaling? scaling)
    {
        int half = headDim / 2;
        invFreq = new float[half];
        for (int i = 0; i < half; i++)
        {
            // NOTE: float32 like transformers (arange(0, d, 2).float() / d, then base ** that).
            float expo = (float)(2 * i) / headDim;
            double f = 1.0 / Math.Pow(theta, expo);
            invFreq[i] = (float)Scale(f, scaling);
        }
    }

    static double Scale(double f, RopeScaling? s)
    {
        if (s is null || s.Type == "default") return f;
        if (s.Type == "linear") return f / s.Factor;
        // llama3: long wavelengths are divided by factor, short ones kept, a smooth blend between.
        double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
        double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        double wavelen = 2 * Math.PI / f;
        if (wavelen < highWavelen) return f;
        if (wavelen > lowWavelen) return f / s.Factor;
        double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        return (1 - smooth) * f / s.Factor + smooth * f;
    }

    /// <summary>cos and sin tables (T, D) for positions start .. start+T-1, the frequencies repeated over both halves.</summary>
    public (Tensor cos, Tensor sin) Tables(int start, int t)
    {
        int half = invFreq.Length, d = 2 * half;
        var c = new float[t * d];
        var s = new float[t * d];
        for (int p = 0; p < t; p++)
            for (int i = 0; i < half; i++)
            {
                float angle = (start + p) * invFreq[i]; // float32 product, as transformers
                float cv = MathF.Cos(angle), sv = MathF.Sin(angle);
                c[p * d + i] = c[p * d + half + i] = cv;
                s[p * d + i] = s[p * d + half + i] = sv;
            }
        return (Tensor.FromArray(c, t, d), Tensor.FromArray(s, t, d));
    }

    /// <summary>x·cos + rotate_half(x)·sin, rotate_half(x) = cat(-x2, x1).</summary>
    /// <param name="x">(B, H, T, D)</param>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        int half = x.Size(-1) / 2;
        var x1 = x.Narrow(-1, 0, half);
        var x2 = x.Narrow(-1, half, half);
        var rotated = Tensor.Cat([x2.Neg(), x1], -1);
        return x.Mul(cos).Add(rotated.Mul(sin));
    }
}

/// <summary>Grouped-query self-attention with rotary embeddings (q_proj, k_proj, v_proj, o_proj).</summary>
public sealed class LlamaAttention : Module
{
    readonly LlamaConfig config;
    readonly int layerIdx;
    public Linear QProj { get; }
    public Linear KProj { get; }
    public Linear VProj { get; }
    public Linear OProj { get; }

    public LlamaAttention(LlamaConfig config, int layerIdx)
    {
        this.config = config;
        this.layerIdx = layerIdx;
        int h = config.HiddenSize, d = config.HeadDim;
        QProj = RegisterModule("q_proj", new Linear(h, config.NumAttentionHeads * d, config.AttentionBias));
        KProj = RegisterModule("k_proj", new Linear(h, config.NumKeyValueHeads * d, config.AttentionBias));
        VProj = RegisterModule("v_proj", new Linear(h, config.NumKeyValueHeads * d, config.AttentionBias));
        OProj = RegisterModule("o_proj", new Linear(config.NumAttentionHeads * d, h, config.AttentionBias));
    }

    /// <param name="x">(B, T, hidden)</param>
    /// <param name="cos">(T, head_dim)</param>
    /// <param name="mask">additive causal mask (T, S)</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KVCache? cache)
    {
        var q = RotaryEmbedding.Apply(ZooOps.SplitHeads(QProj.Forward(x), config.NumAttentionHeads), cos, sin);
        var k = RotaryEmbedding.Apply(ZooOps.SplitHeads(KProj.Forward(x), config.NumKeyValueHeads), cos, sin);
        var v = ZooOps.SplitHeads(VProj.Forward(x), config.NumKeyValueHeads);
        if (cache is not null) (k, v) = cache.Append(layerIdx, k, v); // cached at H_kv heads, repeated below
        int rep = config.NumAttentionHeads / config.NumKeyValueHeads;
        k = RepeatKv(k, rep);
        v = RepeatKv(v, rep);
        return OProj.Forward(ZooOps.MergeHeads(ZooOps.Attention(q, k, v, mask)));
    }

    /// <summary>(B, H_kv, S, D) → (B, H_kv·rep, S, D); query head h reads key/value head h / rep.</summary>
    static Tensor RepeatKv(Tensor x, int rep)
    {
        if (rep == 1) return x;
        int b = x.Size(0), h = x.Size(1), s = x.Size(2), d = x.Size(3);
        return x.Unsqueeze(2).Expand(b, h, rep, s, d).Reshape(b, h * rep, s, d);
    }
}

/// <summary>SwiGLU: down_proj(act(gate_proj(x)) · up_proj(x)).</summary>
public sealed class LlamaMlp : Module
{
    readonly string act;
    public Linear GateProj { get; }
    public Linear UpProj { get; }
    public Linear DownProj { get; }

    public LlamaMlp(LlamaConfig config)
    {
        act = config.HiddenAct;
        GateProj = RegisterModule("gate_proj", new Linear(config.HiddenSize, config.IntermediateSize, config.MlpBias));
        UpProj = RegisterModule("up_proj", new Linear(config.HiddenSize, config.IntermediateSize, config.MlpBias));
        DownProj = RegisterModule("down_proj", new Linear(config.IntermediateSize, config.HiddenSize, config.MlpBias));
    }

    public override Tensor Forward(Tensor input) =>
        DownProj.Forward(ZooOps.Activation(GateProj.Forward(input), act).Mul(UpProj.Forward(input)));
}

public sealed class LlamaDecoderLayer : Module
{
    public LlamaAttention SelfAttn { get; }
    public LlamaMlp Mlp { get; }
    public RMSNorm InputLayernorm { get; }
    public RMSNorm PostAttentionLayernorm { get; }

    public LlamaDecoderLayer(LlamaConfig config, int layerIdx)
    {
        SelfAttn = RegisterModule("self_attn", new LlamaAttention(config, layerIdx));
        Mlp = RegisterModule("mlp", new LlamaMlp(config));
        InputLayernorm = RegisterModule("input_layernorm", new RMSNorm(config.HiddenSize, config.RmsNormEps));
        PostAttentionLayernorm = RegisterModule("post_attention_layernorm", new RMSNorm(config.HiddenSize, config.RmsNormEps));
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KVCache? cache)
    {
        x = x.Add(SelfAttn.Forward(InputLayernorm.Forward(x), cos, sin, mask, cache));
        return x.Add(Mlp.Forward(PostAttentionLayernorm.Forward(x)));
    }
}

/// <summary>LlamaModel: embed_tokens, the decoder layers and the final RMSNorm.</summary>
public sealed class LlamaModel : Module
{
    readonly RotaryEmbedding rope;
    public LlamaConfig Config { get; }
    public Embedding EmbedTokens { get; }
    public ModuleList Layers { get; }
    public RMSNorm Norm { get; }

    public LlamaModel(LlamaConfig config)
    {
        config.Validate();
        Config = config;
        EmbedTokens = RegisterModule("embed_tokens", new Embedding(config.VocabSize, config.HiddenSize));
        Layers = RegisterModule("layers", new ModuleList());
        for (int i = 0; i < config.NumHiddenLayers; i++) Layers.Add(new LlamaDecoderLayer(config, i));
        Norm = RegisterModule("norm", new RMSNorm(config.HiddenSize, config.RmsNormEps));
        rope = new RotaryEmbedding(config.HeadDim, config.RopeTheta, config.RopeScaling);
    }

    /// <summary>Hidden states (B, T, hidden) for input_ids (B, T), continuing the cache's positions when given.</summary>
    public Tensor Forward(Tensor inputIds, KVCache? cache)
    {
        ZooOps.CheckIds(inputIds, Config.VocabSize, "llama");
        int t = inputIds.Size(1), past = cache?.Length ?? 0;
        var (cos, sin) = rope.Tables(past, t);
        var mask = ZooOps.CausalMask(t, past);
        var x = EmbedTokens.Forward(inputIds);
        foreach (var layer in Layers) x = ((LlamaDecoderLayer)layer).Forward(x, cos, sin, mask, cache);
        return Norm.Forward(x);
    }

    public override Tensor Forward(Tensor input) => Forward(input, null);
}

/// <summary>
/// LlamaForCausalLM: <c>model.*</c> and <c>lm_head</c> (tied to <c>model.embed_tokens.weight</c> when
/// tie_word_embeddings is true, and then absent from the state dict). Also fits Mistral-style checkpoints that
/// use the same names and math.
/// </summary>
public sealed class LlamaForCausalLM : Module, ICausalLanguageModel
{
    public LlamaConfig Config { get; }
    public LlamaModel Model { get; }
    public Linear? LmHead { get; }

    public LlamaForCausalLM(LlamaConfig config)
    {
        Config = config;
        Model = RegisterModule("model", new LlamaModel(config));
        if (!config.TieWordEmbeddings) LmHead = RegisterModule("lm_head", new Linear(config.HiddenSize, config.VocabSize, bias: false));
    }

    public int VocabSize => Config.VocabSize;
    public IReadOnlyList<long> EosTokenIds => Config.EosTokenIds;
    public KVCache CreateCache() => new(Config.NumHiddenLayers);

    public Tensor Forward(Tensor inputIds, KVCache? cache) =>
        Functional.Linear(Model.Forward(inputIds, cache), LmHead?.Weight ?? Model.EmbedTokens.Weight);

    public override Tensor Forward(Tensor input) => Forward(input, null);

    public Tensor Generate(Tensor inputIds, GenerationOptions? options = null) => TextGeneration.Generate(this, inputIds, options);

    /// <summary>Loads a Hugging Face Llama folder (config.json and model.safetensors, sharded or not, or pytorch_model.bin).</summary>
    public static LlamaForCausalLM FromPretrained(string directory)
    {
        var config = LlamaConfig.FromHf(HfConfig.Load(directory));
        var model = new LlamaForCausalLM(config);
        model.LoadWeights(PretrainedWeights.Load(directory), directory);
        model.Eval();
        return model;
    }

    /// <summary>Copies checkpoint tensors in; returns the names that were not used.</summary>
    public List<string> LoadWeights(IReadOnlyDictionary<string, Tensor> weights, string source = "weights") =>
        PretrainedWeights.LoadInto(this, weights, source, "model.", name =>
        {
            if (name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)) return null; // buffer in old checkpoints
            if (name == "lm_head.weight" && Config.TieWordEmbeddings) return null;
            return name;
        });

    protected override string ExtraRepr() => string.Create(CultureInfo.InvariantCulture,
        $"layers={Config.NumHiddenLayers}, hidden={Config.HiddenSize}, heads={Config.NumAttentionHeads}, kv_heads={Config.NumKeyValueHeads}, vocab={Config.VocabSize}");
}
