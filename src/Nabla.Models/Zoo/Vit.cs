using System.Globalization;
using System.Text.Json;
using Nabla.NN;

namespace Nabla.Models.Zoo;

/// <summary>The keys of a Hugging Face ViTConfig that the model uses.</summary>
public sealed record ViTConfig
{
    public int ImageSize { get; init; } = 224;
    public int PatchSize { get; init; } = 16;
    public int NumChannels { get; init; } = 3;
    public int HiddenSize { get; init; } = 768;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 12;
    public int IntermediateSize { get; init; } = 3072;
    public string HiddenAct { get; init; } = "gelu";
    public double LayerNormEps { get; init; } = 1e-12;
    public bool QkvBias { get; init; } = true;
    public string[] Labels { get; init; } = ["LABEL_0", "LABEL_1"];

    public static ViTConfig FromHf(HfConfig c) => new()
    {
        ImageSize = Square(c, "image_size", 224),
        PatchSize = Square(c, "patch_size", 16),
        NumChannels = c.GetInt("num_channels", 3),
        HiddenSize = c.GetInt("hidden_size", 768),
        NumHiddenLayers = c.GetInt("num_hidden_layers", 12),
        NumAttentionHeads = c.GetInt("num_attention_heads", 12),
        IntermediateSize = c.GetInt("intermediate_size", 3072),
        HiddenAct = c.GetString("hidden_act", "gelu")!,
        LayerNormEps = c.GetDouble("layer_norm_eps", 1e-12),
        QkvBias = c.GetBool("qkv_bias", true),
        Labels = c.Labels(defaultCount: 2),
    };

    /// <summary>An int, or a [h, w] list with h = w (non-square sizes are not supported).</summary>
    static int Square(HfConfig c, string key, int defaultValue)
    {
        if (c.TryGet(key, out var v) && v.ValueKind == JsonValueKind.Array)
        {
            var xs = v.EnumerateArray().Select(e => e.GetInt32()).ToArray();
            if (xs.Length != 2 || xs[0] != xs[1]) throw new NotSupportedException($"{c.Source}: {key} {v.GetRawText()} is not square; only square sizes are supported");
            return xs[0];
        }
        return c.GetInt(key, defaultValue);
    }

    public int NumPatches => (ImageSize / PatchSize) * (ImageSize / PatchSize);

    internal void Validate()
    {
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ModelFormatException($"vit config: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}");
        if (ImageSize % PatchSize != 0) throw new ModelFormatException($"vit config: image_size {ImageSize} is not a multiple of patch_size {PatchSize}");
    }
}

/// <summary>patch_embeddings: a conv with kernel = stride = patch size ("projection").</summary>
public sealed class ViTPatchEmbeddings : Module
{
    public Conv2d Projection { get; }

    public ViTPatchEmbeddings(ViTConfig config) =>
        Projection = RegisterModule("projection", new Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize));

    /// <param name="input">(B, C, H, W) → (B, N, hidden)</param>
    public override Tensor Forward(Tensor input) => Projection.Forward(input).Flatten(2).Transpose(1, 2);
}

/// <summary>[CLS] + patch embeddings, plus learned position embeddings.</summary>
public sealed class ViTEmbeddings : Module
{
    readonly ViTConfig config;
    public Tensor ClsToken { get; }
    public Tensor PositionEmbeddings { get; }
    public ViTPatchEmbeddings PatchEmbeddings { get; }

    public ViTEmbeddings(ViTConfig config)
    {
        this.config = config;
        ClsToken = RegisterParameter("cls_token", Init.Normal(Tensor.Zeros(1, 1, config.HiddenSize), 0, 0.02));
        PositionEmbeddings = RegisterParameter("position_embeddings", Init.Normal(Tensor.Zeros(1, config.NumPatches + 1, config.HiddenSize), 0, 0.02));
        PatchEmbeddings = RegisterModule("patch_embeddings", new ViTPatchEmbeddings(config));
    }

    /// <param name="input">(B, C, H, W) pixel values → (B, N + 1, hidden)</param>
    public override Tensor Forward(Tensor input)
    {
        if (input.Dim != 4 || input.Size(1) != config.NumChannels || input.Size(2) != config.ImageSize || input.Size(3) != config.ImageSize)
            throw new ShapeMismatchException($"vit: pixel_values must be (B, {config.NumChannels}, {config.ImageSize}, {config.ImageSize}), got {ZooOps.Fmt(input.Shape)}");
        var patches = PatchEmbeddings.Forward(input);
        var cls = ClsToken.Expand(input.Size(0), 1, config.HiddenSize);
        return Tensor.Cat([cls, patches], 1).Add(PositionEmbeddings);
    }
}

/// <summary>attention.attention: query, key, value.</summary>
public sealed class ViTSelfAttention : Module
{
    readonly int heads;
    public Linear Query { get; }
    public Linear Key { get; }
    public Linear Value { get; }

    public ViTSelfAttention(ViTConfig config)
    {
        heads = config.NumAttentionHeads;
        Query = RegisterModule("query", new Linear(config.HiddenSize, config.HiddenSize, config.QkvBias));
        Key = RegisterModule("key", new Linear(config.HiddenSize, config.HiddenSize, config.QkvBias));
        Value = RegisterModule("value", new Linear(config.HiddenSize, config.HiddenSize, config.QkvBias));
    }

    public override Tensor Forward(Tensor input) =>
        ZooOps.MergeHeads(ZooOps.Attention(ZooOps.SplitHeads(Query.Forward(input), heads), ZooOps.SplitHeads(Key.Forward(input), heads),
            ZooOps.SplitHeads(Value.Forward(input), heads), null));
}

/// <summary>A module holding one Linear named "dense" (ViTSelfOutput, ViTIntermediate, ViTOutput).</summary>
public sealed class ViTDense : Module
{
    public Linear Dense { get; }

    public ViTDense(int inFeatures, int outFeatures) => Dense = RegisterModule("dense", new Linear(inFeatures, outFeatures));

    public override Tensor Forward(Tensor input) => Dense.Forward(input);
}

public sealed class ViTAttention : Module
{
    public ViTSelfAttention Attention { get; }
    public ViTDense Output { get; }

    public ViTAttention(ViTConfig config)
    {
        Attention = RegisterModule("attention", new ViTSelfAttention(config));
        Output = RegisterModule("output", new ViTDense(config.HiddenSize, config.HiddenSize));
    }

    public override Tensor Forward(Tensor input) => Output.Forward(Attention.Forward(input));
}

/// <summary>Pre-norm encoder layer: h = x + attn(layernorm_before(x)); h + output(act(intermediate(layernorm_after(h)))).</summary>
public sealed class ViTLayer : Module
{
    readonly string act;
    public ViTAttention Attention { get; }
    public ViTDense Intermediate { get; }
    public ViTDense Output { get; }
    public LayerNorm LayernormBefore { get; }
    public LayerNorm LayernormAfter { get; }

    public ViTLayer(ViTConfig config)
    {
        act = config.HiddenAct;
        Attention = RegisterModule("attention", new ViTAttention(config));
        Intermediate = RegisterModule("intermediate", new ViTDense(config.HiddenSize, config.IntermediateSize));
        Output = RegisterModule("output", new ViTDense(config.IntermediateSize, config.HiddenSize));
        LayernormBefore = RegisterModule("layernorm_before", new LayerNorm(config.HiddenSize, config.LayerNormEps));
        LayernormAfter = RegisterModule("layernorm_after", new LayerNorm(config.HiddenSize, config.LayerNormEps));
    }

    public override Tensor Forward(Tensor input)
    {
        var h = Attention.Forward(LayernormBefore.Forward(input)).Add(input);
        return Output.Forward(ZooOps.Activation(Intermediate.Forward(LayernormAfter.Forward(h)), act)).Add(h);
    }
}

public sealed class ViTEncoder : Module
{
    public ModuleList Layer { get; }

    public ViTEncoder(ViTConfig config)
    {
        Layer = RegisterModule("layer", new ModuleList());
        for (int i = 0; i < config.NumHiddenLayers; i++) Layer.Add(new ViTLayer(config));
    }

    public override Tensor Forward(Tensor input)
    {
        var x = input;
        foreach (var l in Layer) x = l.Forward(x);
        return x;
    }
}

/// <summary>ViTModel: embeddings, encoder, final layernorm and (optionally) the tanh pooler over [CLS].</summary>
public sealed class ViTModel : Module
{
    public ViTConfig Config { get; }
    public ViTEmbeddings Embeddings { get; }
    public ViTEncoder Encoder { get; }
    public LayerNorm Layernorm { get; }
    public ViTDense? Pooler { get; }

    public ViTModel(ViTConfig config, bool addPoolingLayer = true)
    {
        config.Validate();
        Config = config;
        Embeddings = RegisterModule("embeddings", new ViTEmbeddings(config));
        Encoder = RegisterModule("encoder", new ViTEncoder(config));
        Layernorm = RegisterModule("layernorm", new LayerNorm(config.HiddenSize, config.LayerNormEps));
        if (addPoolingLayer) Pooler = RegisterModule("pooler", new ViTDense(config.HiddenSize, config.HiddenSize));
    }

    /// <summary>last_hidden_state (B, N + 1, hidden) for pixel_values (B, C, H, W).</summary>
    public override Tensor Forward(Tensor input) => Layernorm.Forward(Encoder.Forward(Embeddings.Forward(input)));

    /// <summary>pooler_output (B, hidden): tanh(dense(h[:, 0])).</summary>
    public Tensor Pool(Tensor lastHiddenState) =>
        (Pooler ?? throw new InvalidOperationException("vit: this model was built without a pooler")).Forward(lastHiddenState.Select(1, 0)).Tanh();

    public static ViTModel FromPretrained(string directory, bool addPoolingLayer = true)
    {
        var model = new ViTModel(ViTConfig.FromHf(HfConfig.Load(directory)), addPoolingLayer);
        PretrainedWeights.LoadInto(model, PretrainedWeights.Load(directory), directory, "vit.");
        model.Eval();
        return model;
    }
}

/// <summary>ViTForImageClassification: <c>vit.*</c> (no pooler) and <c>classifier</c> on the [CLS] output.</summary>
public sealed class ViTForImageClassification : Module
{
    public ViTConfig Config { get; }
    public ViTModel Vit { get; }
    public Linear Classifier { get; }

    public ViTForImageClassification(ViTConfig config)
    {
        Config = config;
        Vit = RegisterModule("vit", new ViTModel(config, addPoolingLayer: false));
        Classifier = RegisterModule("classifier", new Linear(config.HiddenSize, config.Labels.Length));
    }

    public IReadOnlyList<string> Labels => Config.Labels;

    /// <summary>Class logits (B, num_labels) for pixel_values (B, C, H, W).</summary>
    public override Tensor Forward(Tensor input) => Classifier.Forward(Vit.Forward(input).Select(1, 0));

    public static ViTForImageClassification FromPretrained(string directory, bool allowNewHead = false)
    {
        var model = new ViTForImageClassification(ViTConfig.FromHf(HfConfig.Load(directory)));
        PretrainedWeights.LoadInto(model, PretrainedWeights.Load(directory), directory, "vit.", null,
            allowNewHead ? name => name.StartsWith("classifier.", StringComparison.Ordinal) : null);
        model.Eval();
        return model;
    }

    protected override string ExtraRepr() => string.Create(CultureInfo.InvariantCulture, $"image={Config.ImageSize}, patch={Config.PatchSize}, labels={Config.Labels.Length}");
}
