using System.Globalization;

namespace Nabla.NN;

/// <summary>
/// Multi-head attention (torch.nn.MultiheadAttention) with PyTorch's packed projection: in_proj_weight [3E, E]
/// (xavier uniform), in_proj_bias [3E] (zeros) and out_proj, a Linear whose bias starts at zero.
/// </summary>
public sealed class MultiheadAttention : Module
{
    public int EmbedDim { get; }
    public int NumHeads { get; }
    public int HeadDim { get; }
    public double DropoutP { get; }
    public bool BatchFirst { get; }
    public Tensor InProjWeight { get; }
    public Tensor? InProjBias { get; }
    public Linear OutProj { get; }

    public MultiheadAttention(int embedDim, int numHeads, double dropout = 0, bool bias = true, bool batchFirst = false, DType dtype = DType.Float32)
    {
        if (numHeads <= 0 || embedDim % numHeads != 0)
            throw new NablaException($"MultiheadAttention: embed_dim {embedDim} must be divisible by num_heads {numHeads}");
        (EmbedDim, NumHeads, HeadDim, DropoutP, BatchFirst) = (embedDim, numHeads, embedDim / numHeads, dropout, batchFirst);
        InProjWeight = Init.XavierUniform(RegisterParameter("in_proj_weight", Tensor.Zeros([3 * embedDim, embedDim], dtype)));
        if (bias) InProjBias = RegisterParameter("in_proj_bias", Tensor.Zeros([3 * embedDim], dtype));
        else RegisterNullParameter("in_proj_bias");
        OutProj = RegisterModule("out_proj", new Linear(embedDim, embedDim, bias, dtype));
        if (OutProj.Bias is not null) Init.Zeros(OutProj.Bias);
    }

    /// <summary>Self-attention with no masks; returns only the output.</summary>
    public override Tensor Forward(Tensor input) => Forward(input, input, input, needWeights: false).output;

    /// <param name="query">(L, N, E), or (N, L, E) when batch-first, or unbatched (L, E)</param>
    /// <param name="key">(S, N, E) like query</param>
    /// <param name="value">(S, N, E) like query</param>
    /// <param name="keyPaddingMask">(N, S): bool (true = ignore that key) or float (added to the scores)</param>
    /// <param name="attnMask">(L, S) or (N·heads, L, S): bool (true = masked) or float (added to the scores)</param>
    /// <returns>output like query, and when <paramref name="needWeights"/> the attention weights
    /// (N, L, S) averaged over heads, or (N, heads, L, S)</returns>
    public (Tensor output, Tensor? weights) Forward(Tensor query, Tensor key, Tensor value, Tensor? keyPaddingMask = null,
        bool needWeights = true, Tensor? attnMask = null, bool averageAttnWeights = true)
    {
        bool unbatched = query.Dim == 2;
        if (query.Dim != 2 && query.Dim != 3)
            throw new ShapeMismatchException($"MultiheadAttention: query should be unbatched 2-D or batched 3-D, got {ShapeUtil.Format(query.shape)}");
        if (key.Dim != query.Dim || value.Dim != query.Dim)
            throw new ShapeMismatchException($"MultiheadAttention: query, key and value must have the same rank; query {ShapeUtil.Format(query.shape)}, key {ShapeUtil.Format(key.shape)}, value {ShapeUtil.Format(value.shape)}");
        // To batch-first [N, L, E].
        Tensor q, k, v;
        if (unbatched) { q = query.Unsqueeze(0); k = key.Unsqueeze(0); v = value.Unsqueeze(0); }
        else if (BatchFirst) { q = query; k = key; v = value; }
        else { q = query.Transpose(0, 1); k = key.Transpose(0, 1); v = value.Transpose(0, 1); }
        int n = q.Size(0), l = q.Size(1), s = k.Size(1), e = EmbedDim, h = NumHeads, hd = HeadDim;
        if (q.Size(2) != e || k.Size(2) != e || v.Size(2) != e)
            throw new ShapeMismatchException($"MultiheadAttention: expected embedding size {e}; query {ShapeUtil.Format(query.shape)}, key {ShapeUtil.Format(key.shape)}, value {ShapeUtil.Format(value.shape)}");
        if (k.Size(0) != n || v.Size(0) != n || v.Size(1) != s)
            throw new ShapeMismatchException($"MultiheadAttention: key and value must match query's batch and each other's length; query {ShapeUtil.Format(query.shape)}, key {ShapeUtil.Format(key.shape)}, value {ShapeUtil.Format(value.shape)}");

        var w = InProjWeight.Chunk(3, 0);
        var b = InProjBias?.Chunk(3, 0);
        // [N, len, E] -> [N, heads, len, hd]
        Tensor Heads(Tensor x, int i, int len) =>
            Functional.Linear(x, w[i], b?[i]).Reshape(n, len, h, hd).Permute(0, 2, 1, 3);
        var qh = Heads(q, 0, l).Mul(1 / Math.Sqrt(hd));
        var kh = Heads(k, 1, s);
        var vh = Heads(v, 2, s);
        var scores = qh.Matmul(kh.Transpose(-2, -1));   // [N, heads, L, S]

        if (attnMask is not null)
        {
            var m = attnMask;
            if (unbatched && m.Dim == 3 && m.Size(0) == h) m = m.Unsqueeze(0);
            else if (m.Dim == 2)
            {
                if (m.Size(0) != l || m.Size(1) != s)
                    throw new ShapeMismatchException($"MultiheadAttention: the shape of the 2-D attn_mask is {ShapeUtil.Format(m.shape)}, but should be [{l}, {s}]");
            }
            else if (m.Dim == 3)
            {
                if (m.Size(0) != n * h || m.Size(1) != l || m.Size(2) != s)
                    throw new ShapeMismatchException($"MultiheadAttention: the shape of the 3-D attn_mask is {ShapeUtil.Format(m.shape)}, but should be [{n * h}, {l}, {s}]");
                m = m.Reshape(n, h, l, s);
            }
            else throw new ShapeMismatchException($"MultiheadAttention: attn_mask must be 2-D or 3-D, got {ShapeUtil.Format(m.shape)}");
            scores = ApplyMask(scores, m);
        }
        if (keyPaddingMask is not null)
        {
            var kpm = unbatched && keyPaddingMask.Dim == 1 ? keyPaddingMask.Unsqueeze(0) : keyPaddingMask;
            if (kpm.Dim != 2 || kpm.Size(0) != n || kpm.Size(1) != s)
                throw new ShapeMismatchException($"MultiheadAttention: expected key_padding_mask of shape [{n}, {s}], got {ShapeUtil.Format(keyPaddingMask.shape)}");
            scores = ApplyMask(scores, kpm.Reshape(n, 1, 1, s));
        }

        var attn = Functional.Softmax(scores, -1);
        if (DropoutP > 0) attn = Functional.Dropout(attn, DropoutP, Training);
        var ctx = attn.Matmul(vh).Permute(0, 2, 1, 3).Reshape(n, l, e);   // [N, L, E]
        var output = OutProj.Forward(ctx);
        output = unbatched ? output.Squeeze(0) : BatchFirst ? output : output.Transpose(0, 1);

        Tensor? weights = null;
        if (needWeights)
        {
            weights = averageAttnWeights ? attn.Mean(1) : attn;
            if (unbatched) weights = weights.Squeeze(0);
        }
        return (output, weights);
    }

    /// <summary>Bool masks set masked scores to -inf; float masks are added.</summary>
    static Tensor ApplyMask(Tensor scores, Tensor mask) =>
        mask.DType == DType.Bool ? scores.MaskedFill(mask, double.NegativeInfinity) : scores.Add(mask.To(scores.DType));

    protected override string ExtraRepr() => $"embed_dim={EmbedDim}, num_heads={NumHeads}";
}

/// <summary>
/// One transformer encoder block (torch.nn.TransformerEncoderLayer): self-attention and a feed-forward network,
/// each with a residual connection and layer norm, applied after (post-norm, the default) or before (norm_first).
/// </summary>
public sealed class TransformerEncoderLayer : Module
{
    public MultiheadAttention SelfAttn { get; }
    public Linear Linear1 { get; }
    public Dropout Dropout { get; }
    public Linear Linear2 { get; }
    public LayerNorm Norm1 { get; }
    public LayerNorm Norm2 { get; }
    public Dropout Dropout1 { get; }
    public Dropout Dropout2 { get; }
    public bool NormFirst { get; }
    public bool BatchFirst { get; }
    readonly Func<Tensor, Tensor> activation;

    public TransformerEncoderLayer(int dModel, int nhead, int dimFeedforward = 2048, double dropout = 0.1, string activation = "relu",
        double layerNormEps = 1e-5, bool batchFirst = false, bool normFirst = false)
    {
        this.activation = activation switch
        {
            "relu" => x => x.Relu(),
            "gelu" => x => x.Gelu(),
            _ => throw new NablaException($"TransformerEncoderLayer: activation should be relu or gelu, not {activation}"),
        };
        (NormFirst, BatchFirst) = (normFirst, batchFirst);
        SelfAttn = RegisterModule("self_attn", new MultiheadAttention(dModel, nhead, dropout, batchFirst: batchFirst));
        Linear1 = RegisterModule("linear1", new Linear(dModel, dimFeedforward));
        Dropout = RegisterModule("dropout", new Dropout(dropout));
        Linear2 = RegisterModule("linear2", new Linear(dimFeedforward, dModel));
        Norm1 = RegisterModule("norm1", new LayerNorm([dModel], layerNormEps));
        Norm2 = RegisterModule("norm2", new LayerNorm([dModel], layerNormEps));
        Dropout1 = RegisterModule("dropout1", new Dropout(dropout));
        Dropout2 = RegisterModule("dropout2", new Dropout(dropout));
    }

    public override Tensor Forward(Tensor input) => Forward(input, null, null);

    /// <param name="src">(S, N, E), or (N, S, E) when batch-first</param>
    /// <param name="srcMask">(S, S) or (N·heads, S, S), bool (true = masked) or float (added)</param>
    /// <param name="srcKeyPaddingMask">(N, S), true = padding</param>
    public Tensor Forward(Tensor src, Tensor? srcMask, Tensor? srcKeyPaddingMask)
    {
        var x = src;
        if (NormFirst)
        {
            x = x.Add(SelfAttentionBlock(Norm1.Forward(x), srcMask, srcKeyPaddingMask));
            x = x.Add(FeedForwardBlock(Norm2.Forward(x)));
        }
        else
        {
            x = Norm1.Forward(x.Add(SelfAttentionBlock(x, srcMask, srcKeyPaddingMask)));
            x = Norm2.Forward(x.Add(FeedForwardBlock(x)));
        }
        return x;
    }

    Tensor SelfAttentionBlock(Tensor x, Tensor? mask, Tensor? keyPaddingMask) =>
        Dropout1.Forward(SelfAttn.Forward(x, x, x, keyPaddingMask, needWeights: false, attnMask: mask).output);

    Tensor FeedForwardBlock(Tensor x) => Dropout2.Forward(Linear2.Forward(Dropout.Forward(activation(Linear1.Forward(x)))));
}

/// <summary>A stack of encoder layers (torch.nn.TransformerEncoder), registered as layers.0, layers.1, ..., with an optional final norm.</summary>
public sealed class TransformerEncoder : Module
{
    public ModuleList Layers { get; }
    public Module? Norm { get; }

    /// <param name="layerFactory">makes each layer (PyTorch deep-copies one layer; here each is built fresh)</param>
    public TransformerEncoder(Func<TransformerEncoderLayer> layerFactory, int numLayers, Module? norm = null)
    {
        if (numLayers < 1) throw new NablaException($"TransformerEncoder: num_layers must be at least 1, got {numLayers}");
        Layers = RegisterModule("layers", new ModuleList());
        for (int i = 0; i < numLayers; i++) Layers.Add(layerFactory());
        if (norm is not null) Norm = RegisterModule("norm", norm);
    }

    public override Tensor Forward(Tensor input) => Forward(input, null, null);

    public Tensor Forward(Tensor src, Tensor? mask, Tensor? srcKeyPaddingMask)
    {
        var x = src;
        foreach (var layer in Layers) x = ((TransformerEncoderLayer)layer).Forward(x, mask, srcKeyPaddingMask);
        return Norm is null ? x : Norm.Forward(x);
    }

    protected override string ExtraRepr() => "num_layers=" + Layers.Count.ToString(CultureInfo.InvariantCulture);
}
