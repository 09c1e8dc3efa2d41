using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The wide channel tiles reading a channels-last copy of the input (<see cref="PackedConv2d.UseNhwcTiles"/>) against the
/// float64 eager convolution and the im2col channel tiles they replace, at one and two threads (the output rows or the
/// channel blocks split). The cases cover the K chunks (several whole taps, one tap, a tap's channels in two parts), channel
/// counts that are not a multiple of 16 and widths that are not (the copy's masked tail), dilation and unequal strides.
/// Without column dilation a kernel row's taps are one run of floats; with it, each tap is its own.
/// Changes <see cref="Gemm.Threads"/> and the switch, so it runs in the GEMM settings collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceNhwcTileTests
{
    // n, c, h, w, o, kh, kw, stride h, stride w, pad h, pad w, dilation h, dilation w
    public static IEnumerable<object[]> Cases() => new object[][]
    {
        [1, 64, 56, 56, 128, 3, 3, 2, 2, 1, 1, 1, 1],    // ResNet's 56→28 stride-2 layer: one kernel row (192 floats) per chunk; rows split
        [1, 300, 9, 9, 70, 3, 3, 1, 1, 1, 1, 1, 1],      // kernel rows of 900 floats in parts of 256 (crossing taps); 12 tail channels
        [1, 24, 7, 7, 130, 3, 3, 1, 1, 1, 1, 1, 1],      // 7 wide (masked copy), 8 tail channels, all three kernel rows in one chunk
        [2, 40, 13, 11, 64, 3, 2, 2, 1, 2, 0, 2, 1],     // unequal kernel, stride, pads and dilation; batch 2
        [1, 32, 20, 20, 64, 5, 5, 1, 1, 2, 2, 1, 1],     // five kernel rows of 160 floats, one per chunk
        [1, 256, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1],      // C = 256: one tap per chunk
        [1, 48, 6, 6, 130, 3, 3, 1, 1, 1, 1, 1, 1],      // six tiles, three blocks: two threads split the channel blocks
        [1, 24, 12, 12, 64, 3, 3, 1, 1, 2, 2, 2, 2],     // column dilation: one tap (24 floats) at a time, ten per chunk
        [1, 300, 8, 8, 64, 3, 3, 1, 1, 2, 2, 1, 2],      // column dilation and C > 256: one tap's channels in two parts
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchEagerConvAndTheIm2ColTiles(int n, int c, int h, int w, int o, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
    {
        var gen = new Generator(13);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c, kh, kw], DType.Float32, gen).Mul(0.1);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var reference = ConvReference.Conv(x, weight, bias, (sh, sw), (ph, pw), (dh, dw));
        var residual = Tensor.Randn(reference.Shape, DType.Float32, gen);
        bool avx512 = System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
        foreach (bool constant in new[] { false, true })   // panels from a packed copy, or from the weight's own array
        {
            var conv = new PackedConv2d(weight, bias, (sh, sw), (ph, pw, ph, pw), (dh, dw), 1, FusedActivation.Relu, constantWeight: constant);
            ConvReference.CheckPath(conv, x, reference, residual, v => PackedConv2d.UseNhwcTiles = v, on: avx512,
                restore: PackedConv2d.UseNhwcTiles, () => conv.HasNhwcPanels, tol: 2e-4);
            Assert.Equal(avx512, conv.HasChannelPanels);   // the switch off ran the im2col tiles: the same path family
        }
        // With the switch on from the start, the im2col panels are never built (the weights are not kept twice).
        var fresh = new PackedConv2d(weight, bias, (sh, sw), (ph, pw, ph, pw), (dh, dw), 1, FusedActivation.Relu);
        ConvReference.Close(reference.Relu(), fresh.Run(x), 2e-4);
        Assert.Equal(avx512 && PackedConv2d.UseNhwcTiles, fresh.HasNhwcPanels);
        Assert.False(fresh.HasIm2ColPanels);
    }
}
