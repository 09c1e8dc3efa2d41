using Nabla.NN;
using Xunit;

namespace Nabla.Tests;

/// <summary>MultiheadAttention and the transformer encoder against PyTorch (tools/fixtures/make_module_fixtures.py).</summary>
public sealed class AttentionTests
{
    [Fact]
    public void MultiheadAttentionWithPaddingAndCausalMaskMatchesPyTorch()
    {
        var m = new MultiheadAttention(8, 2);
        ModuleFixture.Check("mha_kpm_causal", m, x =>
        {
            var (o, w) = m.Forward(x["query"], x["key"], x["value"], keyPaddingMask: x["key_padding_mask"], needWeights: true, attnMask: x["attn_mask"]);
            return new() { ["output"] = o, ["weights"] = w };
        }, train: true);
    }

    [Fact]
    public void MultiheadAttentionBatchFirstFloatMaskPerHeadMatchesPyTorch()
    {
        var m = new MultiheadAttention(8, 2, batchFirst: true);
        ModuleFixture.Check("mha_batchfirst_floatmask", m, x =>
        {
            var (o, w) = m.Forward(x["query"], x["key"], x["value"], attnMask: x["attn_mask"], averageAttnWeights: false);
            return new() { ["output"] = o, ["weights"] = w };
        }, train: true);
    }

    [Theory]
    [InlineData(false, "relu")]
    [InlineData(false, "gelu")]
    [InlineData(true, "relu")]
    [InlineData(true, "gelu")]
    public void TransformerEncoderLayerMatchesPyTorch(bool normFirst, string activation)
    {
        var m = new TransformerEncoderLayer(8, 2, dimFeedforward: 16, dropout: 0.1, activation: activation, normFirst: normFirst);
        ModuleFixture.Check($"encoder_layer_normfirst{(normFirst ? 1 : 0)}_{activation}", m,
            x => new() { ["output"] = m.Forward(x["src"], null, x["src_key_padding_mask"]) });
    }

    [Fact]
    public void TransformerEncoderMatchesPyTorch()
    {
        var m = new TransformerEncoder(() => new TransformerEncoderLayer(8, 2, dimFeedforward: 16, dropout: 0.1, batchFirst: true), 2);
        ModuleFixture.Check("encoder_2layers_batchfirst_causal", m, x => new() { ["output"] = m.Forward(x["src"], x["mask"], null) });
    }

    [Fact]
    public void MultiheadAttentionShapesAndDefaults()
    {
        var m = new MultiheadAttention(12, 3);
        Assert.All(m.InProjBias!.ToDoubleArray(), b => Assert.Equal(0, b));
        Assert.All(m.OutProj.Bias!.ToDoubleArray(), b => Assert.Equal(0, b));
        var q = Tensor.Randn([4, 2, 12]);
        var kv = Tensor.Randn([6, 2, 12]);
        var (o, w) = m.Forward(q, kv, kv);
        Assert.Equal([4, 2, 12], o.Shape);
        Assert.Equal([2, 4, 6], w!.Shape);
        var rowSums = w.Sum(-1).ToDoubleArray();
        Assert.All(rowSums, s => Assert.Equal(1, s, 5));
        var (uo, uw) = m.Forward(Tensor.Randn([4, 12]), Tensor.Randn([6, 12]), Tensor.Randn([6, 12]), averageAttnWeights: false);
        Assert.Equal([4, 12], uo.Shape);
        Assert.Equal([3, 4, 6], uw!.Shape);
        Assert.Throws<ShapeMismatchException>(() => m.Forward(q, kv, kv, attnMask: Tensor.Zeros([4, 5])));
        Assert.Throws<NablaException>(() => new MultiheadAttention(10, 3));
    }

    [Fact]
    public void EncoderStateDictNamesMatchPyTorch()
    {
        var m = new TransformerEncoder(() => new TransformerEncoderLayer(8, 2, dimFeedforward: 16), 2, new LayerNorm(8));
        var keys = m.StateDict().Keys.ToList();
        Assert.Equal("layers.0.self_attn.in_proj_weight", keys[0]);
        Assert.Contains("layers.1.linear2.bias", keys);
        Assert.Equal("norm.bias", keys[^1]);
        Assert.Equal(2 * 12 + 2, keys.Count);
    }
}
