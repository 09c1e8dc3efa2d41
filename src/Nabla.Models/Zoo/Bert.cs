using System.Globalization;
using Nabla.NN;

namespace Nabla.Models.Zoo;

/// <summary>The keys of a Hugging Face BertConfig that the model uses.</summary>
public sealed record BertConfig
{
    public int VocabSize { get; init; } = 30522;
    public int HiddenSize { get; init; } = 768;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 12;
    public int IntermediateSize { get; init; } = 3072;
    public string HiddenAct { get; init; } = "gelu";
    public int MaxPositionEmbeddings { get; init; } = 512;
    public int TypeVocabSize { get; init; } = 2;
    public double LayerNormEps { get; init; } = 1e-12;
    public int PadTokenId { get; init; }
    /// <summary>Class names for sequence classification (id2label), "LABEL_i" when only num_labels is given.</summary>
    public string[] Labels { get; init; } = ["LABEL_0", "LABEL_1"];

    public static BertConfig FromHf(HfConfig c)
    {
        string posType = c.GetString("position_embedding_type", "absolute")!;
        if (posType != "absolute") throw new NotSupportedException($"{c.Source}: position_embedding_type '{posType}' is not supported (absolute only)");
        return new()
        {
            VocabSize = c.GetInt("vocab_size", 30522),
            HiddenSize = c.GetInt("hidden_size", 768),
            NumHiddenLayers = c.GetInt("num_hidden_layers", 12),
            NumAttentionHeads = c.GetInt("num_attention_heads", 12),
            IntermediateSize = c.GetInt("intermediate_size", 3072),
            HiddenAct = c.GetString("hidden_act", "gelu")!,
            MaxPositionEmbeddings = c.GetInt("max_position_embeddings", 512),
            TypeVocabSize = c.GetInt("type_vocab_size", 2),
            LayerNormEps = c.GetDouble("layer_norm_eps", 1e-12),
            PadTokenId = c.GetInt("pad_token_id", 0),
            Labels = c.Labels(defaultCount: 2),
        };
    }

    internal void Validate()
    {
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ModelFormatException($"bert config: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}");
    }

    /// <summary>Maps the names of old TF-converted checkpoints (LayerNorm.gamma/beta) to PyTorch's.</summary>
    internal static string RenameLegacy(string name) =>
        name.EndsWith(".gamma", StringComparison.Ordinal) ? name[..^6] + ".weight"
        : name.EndsWith(".beta", StringComparison.Ordinal) ? name[..^5] + ".bias"
        : name;

    internal static bool IsIgnorable(string name) =>
        name.EndsWith("embeddings.position_ids", StringComparison.Ordinal);
}

public sealed class BertEmbeddings : Module
{
    readonly BertConfig config;
    public Embedding WordEmbeddings { get; }
    public Embedding PositionEmbeddings { get; }
    public Embedding TokenTypeEmbeddings { get; }
    public LayerNorm LayerNorm { get; }

    public BertEmbeddings(BertConfig config)
    {
        this.config = config;
        WordEmbeddings = RegisterModule("word_embeddings", new Embedding(config.VocabSize, config.HiddenSize, config.PadTokenId));
        PositionEmbeddings = RegisterModule("position_embeddings", new Embedding(config.MaxPositionEmbeddings, config.HiddenSize));
        TokenTypeEmbeddings = RegisterModule("token_type_embeddings", new Embedding(config.TypeVocabSize, config.HiddenSize));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(config.HiddenSize, config.LayerNormEps));
    }

    /// <param name="inputIds">(B, T)</param>
    /// <param name="tokenTypeIds">(B, T); zeros when null</param>
    public Tensor Forward(Tensor inputIds, Tensor? tokenTypeIds)
    {
        int t = inputIds.Size(1);
        if (t > config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(inputIds), $"bert: sequence length {t} exceeds max_position_embeddings {config.MaxPositionEmbeddings}");
        var types = tokenTypeIds ?? Tensor.Zeros(inputIds.Shape, DType.Int64);
        var pos = Tensor.Arange(0, t, 1, DType.Int64);
        var x = WordEmbeddings.Forward(inputIds).Add(TokenTypeEmbeddings.Forward(types)).Add(PositionEmbeddings.Forward(pos));
        return LayerNorm.Forward(x);
    }
}

/// <summary>The "self" part of BertAttention: query, key, value.</summary>
public sealed class BertSelfAttention : Module
{
    readonly int heads;
    public Linear Query { get; }
    public Linear Key { get; }
    public Linear Value { get; }

    public BertSelfAttention(BertConfig config)
    {
        heads = config.NumAttentionHeads;
        Query = RegisterModule("query", new Linear(config.HiddenSize, config.HiddenSize));
        Key = RegisterModule("key", new Linear(config.HiddenSize, config.HiddenSize));
        Value = RegisterModule("value", new Linear(config.HiddenSize, config.HiddenSize));
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="mask">additive (B, 1, 1, T) or null</param>
    public Tensor Forward(Tensor x, Tensor? mask) =>
        ZooOps.MergeHeads(ZooOps.Attention(ZooOps.SplitHeads(Query.Forward(x), heads), ZooOps.SplitHeads(Key.Forward(x), heads),
            ZooOps.SplitHeads(Value.Forward(x), heads), mask));
}

/// <summary>dense, then LayerNorm(dense(h) + residual); used as attention.output (BertSelfOutput) and output (BertOutput).</summary>
public sealed class BertResidualOutput : Module
{
    public Linear Dense { get; }
    public LayerNorm LayerNorm { get; }

    public BertResidualOutput(int inFeatures, BertConfig config)
    {
        Dense = RegisterModule("dense", new Linear(inFeatures, config.HiddenSize));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(config.HiddenSize, config.LayerNormEps));
    }

    public Tensor Forward(Tensor hidden, Tensor residual) => LayerNorm.Forward(Dense.Forward(hidden).Add(residual));
}

public sealed class BertAttention : Module
{
    public BertSelfAttention Self { get; }
    public BertResidualOutput Output { get; }

    public BertAttention(BertConfig config)
    {
        Self = RegisterModule("self", new BertSelfAttention(config));
        Output = RegisterModule("output", new BertResidualOutput(config.HiddenSize, config));
    }

    public Tensor Forward(Tensor x, Tensor? mask) => Output.Forward(Self.Forward(x, mask), x);
}

/// <summary>intermediate.dense followed by the activation.</summary>
public sealed class BertIntermediate : Module
{
    readonly string act;
    public Linear Dense { get; }

    public BertIntermediate(BertConfig config)
    {
        act = config.HiddenAct;
        Dense = RegisterModule("dense", new Linear(config.HiddenSize, config.IntermediateSize));
    }

    public override Tensor Forward(Tensor input) => ZooOps.Activation(Dense.Forward(input), act);
}

/// <summary>Post-norm encoder layer: attention, intermediate, output.</summary>
public sealed class BertLayer : Module
{
    public BertAttention Attention { get; }
    public BertIntermediate Intermediate { get; }
    public BertResidualOutput Output { get; }

    public BertLayer(BertConfig config)
    {
        Attention = RegisterModule("attention", new BertAttention(config));
        Intermediate = RegisterModule("intermediate", new BertIntermediate(config));
        Output = RegisterModule("output", new BertResidualOutput(config.IntermediateSize, config));
    }

    public Tensor Forward(Tensor x, Tensor? mask)
    {
        var a = Attention.Forward(x, mask);
        return Output.Forward(Intermediate.Forward(a), a);
    }
}

public sealed class BertEncoder : Module
{
    public ModuleList Layer { get; }

    public BertEncoder(BertConfig config)
    {
        Layer = RegisterModule("layer", new ModuleList());
        for (int i = 0; i < config.NumHiddenLayers; i++) Layer.Add(new BertLayer(config));
    }

    public Tensor Forward(Tensor x, Tensor? mask)
    {
        foreach (var l in Layer) x = ((BertLayer)l).Forward(x, mask);
        return x;
    }
}

/// <summary>tanh(dense(h[:, 0])).</summary>
public sealed class BertPooler : Module
{
    public Linear Dense { get; }

    public BertPooler(BertConfig config) => Dense = RegisterModule("dense", new Linear(config.HiddenSize, config.HiddenSize));

    /// <param name="input">(B, T, C) → (B, C)</param>
    public override Tensor Forward(Tensor input) => Dense.Forward(input.Select(1, 0)).Tanh();
}

/// <summary>The encoder's outputs: last_hidden_state (B, T, C) and pooler_output (B, C) when the model has a pooler.</summary>
public sealed record BertOutputs(Tensor LastHiddenState, Tensor? PoolerOutput);

/// <summary>BertModel: embeddings, encoder and (optionally) pooler.</summary>
public sealed class BertModel : Module
{
    public BertConfig Config { get; }
    public BertEmbeddings Embeddings { get; }
    public BertEncoder Encoder { get; }
    public BertPooler? Pooler { get; }

    public BertModel(BertConfig config, bool addPoolingLayer = true)
    {
        config.Validate();
        Config = config;
        Embeddings = RegisterModule("embeddings", new BertEmbeddings(config));
        Encoder = RegisterModule("encoder", new BertEncoder(config));
        if (addPoolingLayer) Pooler = RegisterModule("pooler", new BertPooler(config));
    }

    /// <param name="inputIds">(B, T) token ids</param>
    /// <param name="attentionMask">(B, T): 1 for tokens to attend to, 0 for padding; all ones when null</param>
    /// <param name="tokenTypeIds">(B, T) segment ids; zeros when null</param>
    public BertOutputs Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        ZooOps.CheckIds(inputIds, Config.VocabSize, "bert");
        if (attentionMask is not null && !attentionMask.Shape.SequenceEqual(inputIds.Shape))
            throw new ShapeMismatchException($"bert: attention_mask {ZooOps.Fmt(attentionMask.Shape)} must match input_ids {ZooOps.Fmt(inputIds.Shape)}");
        if (tokenTypeIds is not null)
        {
            if (!tokenTypeIds.Shape.SequenceEqual(inputIds.Shape))
                throw new ShapeMismatchException($"bert: token_type_ids {ZooOps.Fmt(tokenTypeIds.Shape)} must match input_ids {ZooOps.Fmt(inputIds.Shape)}");
            ZooOps.CheckIds(tokenTypeIds, Config.TypeVocabSize, "bert token_type_ids");
        }
        var mask = attentionMask is null ? null : ZooOps.PaddingMask(attentionMask);
        var h = Encoder.Forward(Embeddings.Forward(inputIds, tokenTypeIds), mask);
        return new BertOutputs(h, Pooler?.Forward(h));
    }

    public override Tensor Forward(Tensor input) => Forward(input, null, null).LastHiddenState;

    public static BertModel FromPretrained(string directory, bool addPoolingLayer = true)
    {
        var model = new BertModel(BertConfig.FromHf(HfConfig.Load(directory)), addPoolingLayer);
        PretrainedWeights.LoadInto(model, PretrainedWeights.Load(directory), directory, "bert.", Rename);
        model.Eval();
        return model;
    }

    internal static string? Rename(string name) => BertConfig.IsIgnorable(name) ? null : BertConfig.RenameLegacy(name);
}

/// <summary>cls.predictions.transform: dense, activation, LayerNorm.</summary>
public sealed class BertPredictionHeadTransform : Module
{
    readonly string act;
    public Linear Dense { get; }
    public LayerNorm LayerNorm { get; }

    public BertPredictionHeadTransform(BertConfig config)
    {
        act = config.HiddenAct;
        Dense = RegisterModule("dense", new Linear(config.HiddenSize, config.HiddenSize));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(config.HiddenSize, config.LayerNormEps));
    }

    public override Tensor Forward(Tensor input) => LayerNorm.Forward(ZooOps.Activation(Dense.Forward(input), act));
}

/// <summary>cls.predictions: transform and the vocabulary bias; the decoder weight is the word embedding matrix.</summary>
public sealed class BertLMPredictionHead : Module
{
    public BertPredictionHeadTransform Transform { get; }
    public Tensor Bias { get; }

    public BertLMPredictionHead(BertConfig config)
    {
        Transform = RegisterModule("transform", new BertPredictionHeadTransform(config));
        Bias = RegisterParameter("bias", Tensor.Zeros(config.VocabSize));
    }

    /// <param name="hidden">(B, T, C)</param>
    /// <param name="decoderWeight">(V, C), tied to the word embeddings</param>
    public Tensor Forward(Tensor hidden, Tensor decoderWeight) => Functional.Linear(Transform.Forward(hidden), decoderWeight, Bias);
}

/// <summary>The "cls" module of BertForMaskedLM (BertOnlyMLMHead).</summary>
public sealed class BertOnlyMLMHead : Module
{
    public BertLMPredictionHead Predictions { get; }

    public BertOnlyMLMHead(BertConfig config) => Predictions = RegisterModule("predictions", new BertLMPredictionHead(config));
}

/// <summary>BertForMaskedLM: <c>bert.*</c> (no pooler) and <c>cls.predictions.*</c> with the decoder tied to the word embeddings.</summary>
public sealed class BertForMaskedLM : Module
{
    public BertConfig Config { get; }
    public BertModel Bert { get; }
    public BertOnlyMLMHead Cls { get; }

    public BertForMaskedLM(BertConfig config)
    {
        Config = config;
        Bert = RegisterModule("bert", new BertModel(config, addPoolingLayer: false));
        Cls = RegisterModule("cls", new BertOnlyMLMHead(config));
    }

    /// <summary>Vocabulary logits (B, T, V).</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null) =>
        Cls.Predictions.Forward(Bert.Forward(inputIds, attentionMask, tokenTypeIds).LastHiddenState, Bert.Embeddings.WordEmbeddings.Weight);

    public override Tensor Forward(Tensor input) => Forward(input, null, null);

    /// <summary>
    /// Loads a Hugging Face BERT folder. Pre-training checkpoints (bert-base-uncased) load too: their pooler and
    /// next-sentence head are left unused, the tied decoder copies skipped.
    /// </summary>
    public static BertForMaskedLM FromPretrained(string directory)
    {
        var model = new BertForMaskedLM(BertConfig.FromHf(HfConfig.Load(directory)));
        model.LoadWeights(PretrainedWeights.Load(directory), directory);
        model.Eval();
        return model;
    }

    public List<string> LoadWeights(IReadOnlyDictionary<string, Tensor> weights, string source = "weights") =>
        PretrainedWeights.LoadInto(this, weights, source, "bert.", name =>
            name is "cls.predictions.decoder.weight" or "cls.predictions.decoder.bias" ? null : BertModel.Rename(name));
}

/// <summary>BertForSequenceClassification: <c>bert.*</c> with pooler, and <c>classifier</c> on the pooled output.</summary>
public sealed class BertForSequenceClassification : Module
{
    public BertConfig Config { get; }
    public BertModel Bert { get; }
    public Linear Classifier { get; }

    public BertForSequenceClassification(BertConfig config)
    {
        Config = config;
        Bert = RegisterModule("bert", new BertModel(config, addPoolingLayer: true));
        Classifier = RegisterModule("classifier", new Linear(config.HiddenSize, config.Labels.Length));
    }

    public IReadOnlyList<string> Labels => Config.Labels;

    /// <summary>Class logits (B, num_labels).</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null) =>
        Classifier.Forward(Bert.Forward(inputIds, attentionMask, tokenTypeIds).PoolerOutput!);

    public override Tensor Forward(Tensor input) => Forward(input, null, null);

    /// <summary>
    /// Loads a fine-tuned classifier folder. With <paramref name="allowNewHead"/>, a base checkpoint without
    /// <c>classifier.*</c> loads and the head keeps its random initialization (as transformers does, with a warning).
    /// </summary>
    public static BertForSequenceClassification FromPretrained(string directory, bool allowNewHead = false)
    {
        var model = new BertForSequenceClassification(BertConfig.FromHf(HfConfig.Load(directory)));
        model.LoadWeights(PretrainedWeights.Load(directory), directory, allowNewHead);
        model.Eval();
        return model;
    }

    public List<string> LoadWeights(IReadOnlyDictionary<string, Tensor> weights, string source = "weights", bool allowNewHead = false) =>
        PretrainedWeights.LoadInto(this, weights, source, "bert.", BertModel.Rename,
            allowNewHead ? name => name.StartsWith("classifier.", StringComparison.Ordinal) : null);

    protected override string ExtraRepr() => string.Create(CultureInfo.InvariantCulture, $"labels={Config.Labels.Length}");
}
