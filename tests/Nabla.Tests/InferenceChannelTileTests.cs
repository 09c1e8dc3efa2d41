using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The channel-tiled path of <see cref="PackedConv2d"/> (batch 1, at most <see cref="PackedConv2d.ChannelTileMaxColumns"/>
/// output positions, AVX-512) against the float64 eager convolution (<see cref="ConvReference"/>) and the GEMM path it replaces; it
/// changes <see cref="Gemm.Threads"/> and <see cref="PackedConv2d.UseChannelTiles"/>, so it runs in the GEMM settings collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceChannelTileTests
{
    // n, c, h, w, o, k, stride, pad
    public static TheoryData<int, int, int, int, int, int, int, int> Cases() => new()
    {
        { 1, 24, 7, 7, 70, 3, 1, 1 },     // 49 positions (not a multiple of the 6-row tile), 70 channels (a partial 64 block)
        { 1, 32, 14, 14, 130, 3, 2, 1 },  // stride 2 onto 7x7, K = 288 across two K blocks, three channel blocks
        { 1, 300, 5, 5, 64, 1, 1, 0 },    // pointwise, K = 300, one full channel block
        { 1, 24, 64, 64, 64, 3, 1, 1 },   // exactly 4096 positions (the limit), K = 216 (the minimum is 192)
        { 1, 33, 9, 8, 128, 3, 1, 0 },    // unpadded, non-square 7x6 output
        { 1, 24, 20, 20, 64, 3, 1, 1 },   // one channel block, 400 positions: two threads split the output rows
        { 1, 32, 6, 6, 130, 3, 1, 1 },    // six position tiles, three channel blocks: two threads split the blocks
        { 2, 24, 7, 7, 70, 3, 1, 1 },     // batch 2: image by image
        // Narrow layers (16-channel panels, 12-position tiles) at stride 2: at stride 1 they run directly (DirectFlat).
        { 1, 6, 28, 28, 16, 5, 2, 0 },    // narrow, LeNet's second convolution's taps
        { 3, 8, 27, 27, 16, 5, 2, 2 },    // narrow, batch 3, padded: mnist-8's second convolution's taps
        { 1, 8, 17, 17, 30, 3, 2, 1 },    // narrow, 30 channels (a partial 16 block), K = 72
        { 1, 16, 40, 40, 16, 5, 2, 2 },   // narrow, 20 output rows: two threads take ten rows each
        { 1, 40, 15, 15, 100, 3, 2, 1 },  // 8x8 output, two blocks, 11 tiles: two threads split the rows (four each)
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ChannelTilesMatchEagerConvAndTheGemmPath(int n, int c, int h, int w, int o, int k, int stride, int pad)
    {
        var gen = new Generator(11);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var reference = ConvReference.Conv(x, weight, bias, (stride, stride), (pad, pad));
        var residual = Tensor.Randn(reference.Shape, DType.Float32, gen);
        foreach (bool constant in new[] { false, true })   // panels from a packed copy, or from the weight's own array
        {
            var conv = new PackedConv2d(weight, bias, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, FusedActivation.Relu, constantWeight: constant);
            ConvReference.CheckPath(conv, x, reference, residual, v => PackedConv2d.UseChannelTiles = v,
                on: System.Runtime.Intrinsics.X86.Avx512F.IsSupported, restore: PackedConv2d.UseChannelTiles, () => conv.HasChannelPanels);
        }
    }

    [Fact]
    public void LargerMapsAndOtherChannelCountsKeepTheGemmPath()
    {
        var gen = new Generator(5);
        var weight = Tensor.Randn([64, 24, 3, 3], DType.Float32, gen).Mul(0.2);
        var conv = new PackedConv2d(weight, null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None);
        var big = Tensor.Randn([1, 24, 65, 64], DType.Float32, gen);   // 4160 positions > 4096
        ConvReference.Close(ConvReference.Conv(big, weight, null, (1, 1), (1, 1)), conv.Run(big));
        Assert.False(conv.HasChannelPanels);
        // Channels or taps outside both tiles' ranges: 8 channels (half a narrow tile), 64 channels with K = 180 < 192,
        // 48 channels (between the narrow and the wide tile), 16 channels with K = 54 < 64.
        foreach (var (o, c) in new[] { (8, 24), (64, 20), (48, 24), (16, 6) })
        {
            var w = Tensor.Randn([o, c, 3, 3], DType.Float32, gen);
            var small = new PackedConv2d(w, null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None);
            var x = Tensor.Randn([1, c, 7, 7], DType.Float32, gen);
            ConvReference.Close(ConvReference.Conv(x, w, null, (1, 1), (1, 1)), small.Run(x));
            Assert.False(small.HasChannelPanels);
        }
    }

    [Fact]
    public void ConcurrentCallsOnOneInstanceAgree()
    {
        var gen = new Generator(9);
        var weight = Tensor.Randn([96, 24, 3, 3], DType.Float32, gen);
        var conv = new PackedConv2d(weight, null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None);
        var inputs = Enumerable.Range(0, 8).Select(_ => Tensor.Randn([1, 24, 7, 7], DType.Float32, gen)).ToArray();
        var outputs = new Tensor[inputs.Length];
        Parallel.For(0, inputs.Length, i => outputs[i] = conv.Run(inputs[i]));   // the first calls race to build the panels
        for (int i = 0; i < inputs.Length; i++)
            ConvReference.Close(ConvReference.Conv(inputs[i], weight, null, (1, 1), (1, 1)), outputs[i]);
    }
}
